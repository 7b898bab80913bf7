//! Subscriptions by name (an MQ channel, a watched service) and the ids one handle owns:
//! the bookkeeping the hub's pub/sub and its service watches share.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use mpush::spi::delivery::{Outlet, SubState};

/// The open subscriptions of a hub table, by the name they listen on.
#[derive(Debug)]
pub(crate) struct Outlets<M> {
    by_name: HashMap<String, Vec<Outlet<M>>>,
    name_of: HashMap<u64, String>,
}

impl<M> Default for Outlets<M> {
    fn default() -> Self {
        Self {
            by_name: HashMap::new(),
            name_of: HashMap::new(),
        }
    }
}

impl<M> Outlets<M> {
    /// Adds `outlet` as a subscription to `name`.
    pub(crate) fn add(&mut self, name: &str, outlet: Outlet<M>) {
        self.name_of.insert(outlet.id, name.to_string());
        self.by_name
            .entry(name.to_string())
            .or_default()
            .push(outlet);
    }

    /// Detaches subscription `id`; its queue closes once the returned state's owner is done.
    pub(crate) fn remove(&mut self, id: u64) -> Option<Arc<SubState>> {
        let name = self.name_of.remove(&id)?;
        let subs = self.by_name.get_mut(&name)?;
        let pos = subs.iter().position(|o| o.id == id)?;
        let outlet = subs.swap_remove(pos);
        if subs.is_empty() {
            self.by_name.remove(&name);
        }
        Some(outlet.state)
    }

    /// The subscriptions to `name` (none: empty).
    pub(crate) fn of(&self, name: &str) -> &[Outlet<M>] {
        self.by_name
            .get(name)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
}

/// The subscription ids one handle opened, so that dropping the handle can end them.
#[derive(Debug, Default)]
pub(crate) struct Owned(Mutex<HashSet<u64>>);

impl Owned {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<u64>> {
        // Only plain ids are moved under the lock, so a poisoned one still holds valid ids.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn insert(&self, id: u64) {
        self.lock().insert(id);
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Ends subscription `id`: forgets it, detaches it (`detach`: from its hub table) and
    /// waits until its listener is not running and will not be called again.
    pub(crate) async fn end(&self, id: u64, detach: impl FnOnce(u64) -> Option<Arc<SubState>>) {
        self.lock().remove(&id);
        if let Some(state) = detach(id) {
            state.close().await;
        }
    }

    /// Ends every subscription without waiting (for the handle's drop).
    pub(crate) fn end_all(&self, mut detach: impl FnMut(u64) -> Option<Arc<SubState>>) {
        let ids = std::mem::take(&mut *self.lock());
        for id in ids {
            if let Some(state) = detach(id) {
                state.close_now();
            }
        }
    }
}
