//! Conformance suites that every SPI backend runs (feature `testkit`).
//!
//! One suite per backend trait, written only against the traits, so the memory, Redis and
//! ZooKeeper backends are held to the same contract. Each suite is a public async function
//! that panics with a message naming the violated guarantee. Every backend call is bounded
//! by [`CALL_TIMEOUT`] and every awaited delivery by [`DELIVERY_TIMEOUT`], so a broken or
//! unreachable backend fails fast instead of hanging the test run.
//!
//! A backend crate runs them from its tests, for example:
//! ```text
//! #[tokio::test(flavor = "multi_thread")]
//! async fn cache_conforms() {
//!     let cache: Arc<dyn CacheManager> = Arc::new(MyCache::connect().await?);
//!     mpush::spi::conformance::cache_manager(cache, "conformance:").await;
//! }
//! ```
//! Run them on a multi-threaded runtime: backends deliver on their own tasks.

mod cache;
mod mq;
mod registry;
mod watch;

use std::fmt::Debug;
use std::future::Future;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::{SpiError, SpiResult};

pub use cache::cache_manager;
pub use mq::mq_client;
pub use registry::service_registry;
pub use watch::{RecordingWatch, cache_watch, wait_changed};

/// The longest any single backend call may take before the suite fails.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest an asynchronous delivery (message, watch event) may take.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a check waits for something that must *not* happen (a late delivery).
pub const QUIET_PERIOD: Duration = Duration::from_millis(300);
/// How often pending deliveries are polled.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A listener that panicked mid-push leaves a usable Vec; keep collecting.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Awaits a backend call that must succeed within [`CALL_TIMEOUT`].
async fn call<T>(what: &str, fut: impl Future<Output = SpiResult<T>>) -> T {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Err(_) => panic!("conformance: `{what}` did not complete within {CALL_TIMEOUT:?}"),
        Ok(Err(e)) => panic!("conformance: `{what}` failed: {e}"),
        Ok(Ok(v)) => v,
    }
}

/// Awaits a backend call that must fail with [`SpiError::Backend`] within [`CALL_TIMEOUT`].
async fn call_wrong_type<T: Debug>(what: &str, fut: impl Future<Output = SpiResult<T>>) {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Err(_) => panic!("conformance: `{what}` did not complete within {CALL_TIMEOUT:?}"),
        Ok(Ok(v)) => panic!(
            "conformance: `{what}` on a key of another type must fail (WRONGTYPE), got Ok({v:?})"
        ),
        Ok(Err(SpiError::Backend { .. })) => {}
        Ok(Err(e)) => panic!(
            "conformance: `{what}` on a key of another type must fail with SpiError::Backend, got {e}"
        ),
    }
}

/// Polls `check` until it returns `Ok`, failing after [`DELIVERY_TIMEOUT`] with the last
/// state it reported.
async fn eventually(what: &str, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    loop {
        let state = match check() {
            Ok(()) => return,
            Err(state) => state,
        };
        if Instant::now() >= deadline {
            panic!(
                "conformance: {what}: not observed within {DELIVERY_TIMEOUT:?}; last state: {state}"
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}
