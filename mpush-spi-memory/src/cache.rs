//! [`MemoryCache`]: a Redis-like key-value store (strings, hashes, sorted sets, lists).
//!
//! Semantics follow the Redis commands named in [`CacheManager`], so that code tested against
//! this backend behaves the same on Redis: typed keys with `WRONGTYPE` errors, empty
//! collections vanish, `SET` clears a previous TTL, inclusive ranges with negative indexes.

use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::{BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use mpush::spi::{
    CacheManager, CasOutcome, HashCas, KeyWatch, SpiError, SpiResult, SubscriptionId,
};
use tokio::time::Instant;

use crate::BACKEND;
use crate::hub::MemoryHub;
use crate::packed::{Packed, PackedPairs};

/// How often, at most, a write triggers a sweep of expired keys.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Keys purged per sweep at most, so that one caller never pays for a huge backlog at once.
const SWEEP_BATCH: usize = 4096;

fn wrong_type() -> SpiError {
    SpiError::backend(
        BACKEND,
        "WRONGTYPE Operation against a key holding the wrong kind of value",
    )
}

/// One stored value: Redis's types, minus those MPush never uses.
///
/// Laid out for many small keys (a server holds a few per bound connection: its reusable
/// session, its route hash, its members of the online sets): the rare large collections are
/// boxed so every value stays at 24 bytes, strings are [`Packed`], and a hash of a few
/// fields is one [`PackedPairs`] block, not a hash table.
// Boxed collections on purpose: the box keeps every key's entry small (see above).
#[allow(clippy::box_collection)]
#[derive(Debug)]
enum Value {
    Str(Packed),
    Hash(Fields),
    ZSet(Box<ZSet>),
    List(Box<VecDeque<String>>),
}

/// Fields of a hash at most this many are kept in a vector (looked up linearly); a larger
/// hash becomes a hash table.
const FEW_FIELDS: usize = 8;
/// A field or value longer than this (in bytes of text) makes a hash a hash table: a write to
/// the packed block copies the whole block (Redis's `hash-max-listpack-value`, 64 there;
/// larger here so that a route, ≈ 110–200 bytes, stays packed).
const FEW_VALUE_MAX: usize = 256;

/// A Redis hash: most hold one to a few fields (a user's routes, one per client type), for
/// which one packed block is several times smaller than a hash table.
// The box keeps a small hash (the common case) at the size of its block.
#[allow(clippy::box_collection)]
#[derive(Debug)]
enum Fields {
    Few(PackedPairs),
    Many(Box<HashMap<Box<str>, Packed>>),
}

impl Default for Fields {
    fn default() -> Self {
        Fields::Few(PackedPairs::default())
    }
}

impl Fields {
    fn get(&self, field: &str) -> Option<String> {
        match self {
            Fields::Few(pairs) => pairs.get(field),
            Fields::Many(m) => m.get(field).map(Packed::text),
        }
    }

    fn insert(&mut self, field: &str, value: &str) {
        match self {
            Fields::Few(pairs) => {
                let small = field.len() <= FEW_VALUE_MAX && value.len() <= FEW_VALUE_MAX;
                if small && (pairs.len() < FEW_FIELDS || pairs.contains(field)) {
                    pairs.insert(field, value);
                } else {
                    let mut m: HashMap<Box<str>, Packed> = pairs
                        .to_text()
                        .map(|(f, v)| (f.into_boxed_str(), Packed::new(&v)))
                        .collect();
                    m.insert(field.into(), Packed::new(value));
                    *self = Fields::Many(Box::new(m));
                }
            }
            Fields::Many(m) => {
                m.insert(field.into(), Packed::new(value));
            }
        }
    }

    fn remove(&mut self, field: &str) {
        match self {
            Fields::Few(pairs) => pairs.remove(field),
            Fields::Many(m) => {
                m.remove(field);
            }
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Fields::Few(pairs) => pairs.is_empty(),
            Fields::Many(m) => m.is_empty(),
        }
    }

    fn to_map(&self) -> HashMap<String, String> {
        match self {
            Fields::Few(pairs) => pairs.to_text().collect(),
            Fields::Many(m) => m.iter().map(|(f, v)| (f.to_string(), v.text())).collect(),
        }
    }
}

/// Nanoseconds after the store's origin ([`Store::now`]); 8 bytes where an
/// `Option<Instant>` takes 16, in every entry of the key map and the deadline heap.
type Deadline = u64;
/// The [`Deadline`] of a key without TTL.
const NEVER: Deadline = Deadline::MAX;

#[derive(Debug)]
struct StoredEntry {
    value: Value,
    expires_at: Deadline,
}

impl StoredEntry {
    fn is_expired(&self, now: Deadline) -> bool {
        self.expires_at <= now
    }
}

/// A sorted-set score with a total order, so it can key a `BTreeSet`.
///
/// NaN is rejected before it gets here and `-0.0` is normalised to `0.0`, so `total_cmp`
/// agrees with Redis's numeric order.
#[derive(Debug, Clone, Copy)]
struct Score(f64);

impl PartialEq for Score {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}
impl Eq for Score {}
impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Score {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        self.0.total_cmp(&other.0)
    }
}

/// A sorted set: members ordered by (score, member), as Redis orders one.
///
/// MPush's sorted sets (the online users of a server, its users by node) give every member
/// the score 0, so while all scores are equal the set is [`ZSet::Uniform`]: the members in
/// their own order, one small block each, ≈ 40 bytes a member where the general form takes
/// ≈ 110 (an index entry, an order entry and a shared name). A second score makes it
/// [`ZSet::Mixed`] for good.
#[derive(Debug)]
enum ZSet {
    /// Every member has `score`: (score, member) order is the members' order.
    Uniform {
        score: Score,
        members: BTreeSet<Box<str>>,
    },
    /// Scores differ. The index and the order share each member's one allocation.
    Mixed {
        scores: HashMap<Arc<str>, Score>,
        order: BTreeSet<(Score, Arc<str>)>,
    },
}

impl Default for ZSet {
    fn default() -> Self {
        ZSet::Uniform {
            score: Score(0.0),
            members: BTreeSet::new(),
        }
    }
}

impl ZSet {
    fn add(&mut self, member: &str, score: Score) {
        match self {
            ZSet::Uniform {
                score: common,
                members,
            } => {
                if members.is_empty() {
                    *common = score;
                }
                if *common == score {
                    if !members.contains(member) {
                        members.insert(member.into());
                    }
                    return;
                }
                let common = *common;
                let mut scores = HashMap::with_capacity(members.len() + 1);
                let mut order = BTreeSet::new();
                for name in std::mem::take(members) {
                    let name: Arc<str> = Arc::from(name);
                    order.insert((common, name.clone()));
                    scores.insert(name, common);
                }
                *self = ZSet::Mixed { scores, order };
                self.add(member, score);
            }
            ZSet::Mixed { scores, order } => {
                if let Some((name, old)) = scores.get_key_value(member) {
                    let name = name.clone();
                    if *old == score {
                        return;
                    }
                    order.remove(&(*old, name.clone()));
                    order.insert((score, name.clone()));
                    scores.insert(name, score);
                    return;
                }
                let name: Arc<str> = Arc::from(member);
                order.insert((score, name.clone()));
                scores.insert(name, score);
            }
        }
    }

    fn remove(&mut self, member: &str) {
        match self {
            ZSet::Uniform { members, .. } => {
                members.remove(member);
            }
            ZSet::Mixed { scores, order } => {
                if let Some((name, old)) = scores.remove_entry(member) {
                    order.remove(&(old, name));
                }
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            ZSet::Uniform { members, .. } => members.len(),
            ZSet::Mixed { scores, .. } => scores.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The members from index `from` to `to` (inclusive) in (score, member) order.
    fn range(&self, from: usize, to: usize) -> Vec<String> {
        let take = to - from + 1;
        match self {
            ZSet::Uniform { members, .. } => members
                .iter()
                .skip(from)
                .take(take)
                .map(|m| m.to_string())
                .collect(),
            ZSet::Mixed { order, .. } => order
                .iter()
                .skip(from)
                .take(take)
                .map(|(_, m)| m.to_string())
                .collect(),
        }
    }
}

/// Maps a Redis collection type onto [`Value`], so one code path serves all of them.
trait Kind: Default + Sized {
    fn get(value: &Value) -> Option<&Self>;
    fn get_mut(value: &mut Value) -> Option<&mut Self>;
    fn wrap(self) -> Value;
    fn is_empty(&self) -> bool;
}

/// `Kind` for the collection held by variant `Value::$variant`; `$empty` says whether one
/// is empty.
macro_rules! kind {
    ($ty:ty, $variant:ident, $empty:expr) => {
        impl Kind for $ty {
            fn get(value: &Value) -> Option<&Self> {
                match value {
                    Value::$variant(c) => Some(c),
                    _ => None,
                }
            }
            fn get_mut(value: &mut Value) -> Option<&mut Self> {
                match value {
                    Value::$variant(c) => Some(c),
                    _ => None,
                }
            }
            fn wrap(self) -> Value {
                Value::$variant(self)
            }
            fn is_empty(&self) -> bool {
                $empty(self)
            }
        }
    };
}

kind!(Fields, Hash, Fields::is_empty);

/// `Kind` for a collection held boxed by variant `Value::$variant`.
macro_rules! boxed_kind {
    ($ty:ty, $variant:ident, $empty:expr) => {
        impl Kind for $ty {
            fn get(value: &Value) -> Option<&Self> {
                match value {
                    Value::$variant(c) => Some(&**c),
                    _ => None,
                }
            }
            fn get_mut(value: &mut Value) -> Option<&mut Self> {
                match value {
                    Value::$variant(c) => Some(&mut **c),
                    _ => None,
                }
            }
            fn wrap(self) -> Value {
                Value::$variant(Box::new(self))
            }
            fn is_empty(&self) -> bool {
                $empty(self)
            }
        }
    };
}

boxed_kind!(ZSet, ZSet, ZSet::is_empty);
boxed_kind!(VecDeque<String>, List, VecDeque::is_empty);

/// The inclusive index range `[start, stop]` of Redis's ZRANGE/LRANGE over `len` items,
/// or `None` when it selects nothing.
fn redis_range(len: usize, start: i64, stop: i64) -> Option<(usize, usize)> {
    let len = i64::try_from(len).unwrap_or(i64::MAX);
    let start = if start < 0 {
        start.saturating_add(len).max(0)
    } else {
        start
    };
    let stop = if stop < 0 {
        stop.saturating_add(len)
    } else {
        stop.min(len - 1)
    };
    if start > stop || start >= len {
        return None;
    }
    // Both are in 0..len here, so the conversions cannot fail.
    Some((usize::try_from(start).ok()?, usize::try_from(stop).ok()?))
}

/// Keys with a TTL, soonest deadline first.
type Deadlines = BinaryHeap<Reverse<(Deadline, Arc<str>)>>;

/// The key space of one hub.
///
/// Expiry is checked on every read (an expired value is never returned) and purged lazily:
/// on access, and by a sweep that at most every [`SWEEP_INTERVAL`] pops the deadlines that
/// have passed from a min-heap. A key re-set before its deadline leaves a stale heap item
/// that is discarded when that deadline comes, so the heap holds at most one item per
/// TTL'd write within the longest TTL.
///
/// Keys are shared (`Arc<str>`) between the map and the deadline heap, so a key with a TTL is
/// stored once.
pub(crate) struct Store {
    map: DashMap<Arc<str>, StoredEntry>,
    deadlines: Mutex<Deadlines>,
    origin: Instant,
    /// Nanoseconds after `origin` at which the next sweep is due.
    next_sweep: AtomicU64,
    /// [`CacheManager::watch_prefix`] watches, by id.
    watches: RwLock<Vec<Watch>>,
    /// `watches` is not empty: a write without watchers takes no lock to find that out.
    watched: AtomicBool,
}

/// One [`CacheManager::watch_prefix`].
struct Watch {
    id: u64,
    prefix: Box<str>,
    watch: Arc<dyn KeyWatch>,
}

impl Store {
    pub(crate) fn new() -> Self {
        Self {
            map: DashMap::new(),
            deadlines: Mutex::new(BinaryHeap::new()),
            origin: Instant::now(),
            next_sweep: AtomicU64::new(0),
            watches: RwLock::new(Vec::new()),
            watched: AtomicBool::new(false),
        }
    }

    fn add_watch(&self, id: u64, prefix: &str, watch: Arc<dyn KeyWatch>) {
        let mut watches = self.watches.write().unwrap_or_else(PoisonError::into_inner);
        watches.push(Watch {
            id,
            prefix: prefix.into(),
            watch: watch.clone(),
        });
        self.watched.store(true, Ordering::Release);
        drop(watches);
        // Only now: a write from here on finds the watch, so nothing read after this call
        // can miss its notice.
        watch.watching();
    }

    fn remove_watch(&self, id: u64) {
        let mut watches = self.watches.write().unwrap_or_else(PoisonError::into_inner);
        watches.retain(|w| w.id != id);
        self.watched.store(!watches.is_empty(), Ordering::Release);
    }

    /// Tells the watches of `key` that it was written. Called after the write, outside every
    /// map lock, and before the write returns to its caller.
    fn notify(&self, key: &str) {
        if !self.watched.load(Ordering::Acquire) {
            return;
        }
        // Read under the lock, called outside it: a watch may call back into the store.
        let targets: Vec<Arc<dyn KeyWatch>> = self
            .watches
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|w| key.starts_with(&*w.prefix))
            .map(|w| w.watch.clone())
            .collect();
        for watch in targets {
            watch.changed(key);
        }
    }

    /// Number of keys held, including expired ones not purged yet.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// The current time as a [`Deadline`]; below [`NEVER`], so a key without TTL never
    /// expires.
    fn now(&self) -> Deadline {
        Deadline::try_from(
            Instant::now()
                .saturating_duration_since(self.origin)
                .as_nanos(),
        )
        .unwrap_or(NEVER)
        .min(NEVER - 1)
    }

    /// Purges keys whose deadline has passed, if a sweep is due and no one else runs it.
    fn maybe_sweep(&self, now: Deadline) {
        let due = self.next_sweep.load(Ordering::Relaxed);
        if now < due {
            return;
        }
        let interval = u64::try_from(SWEEP_INTERVAL.as_nanos()).unwrap_or(u64::MAX);
        let next = now.saturating_add(interval);
        if self
            .next_sweep
            .compare_exchange(due, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let mut expired = Vec::new();
        {
            let Ok(mut heap) = self.deadlines.lock() else {
                return;
            };
            while expired.len() < SWEEP_BATCH {
                match heap.peek() {
                    Some(Reverse((at, _))) if *at <= now => {}
                    _ => break,
                }
                if let Some(Reverse((_, key))) = heap.pop() {
                    expired.push(key);
                }
            }
            if expired.len() == SWEEP_BATCH {
                // A backlog remains: let the next write continue instead of waiting a period.
                self.next_sweep.store(now, Ordering::Relaxed);
            }
        }
        // The heap lock is released before touching the map: no lock-order coupling.
        for key in expired {
            self.map.remove_if(&*key, |_, e| e.is_expired(now));
        }
    }

    fn get_string(&self, key: &str) -> SpiResult<Option<String>> {
        self.read(key, |v| match v {
            Value::Str(s) => Ok(s.text()),
            _ => Err(wrong_type()),
        })
    }

    fn set_string(&self, key: &str, value: &str, ttl: Option<Duration>) {
        let now = self.now();
        // A TTL past 584 years saturates to NEVER: the key is kept, as it would be anyway.
        let expires_at = ttl.map_or(NEVER, |ttl| {
            now.saturating_add(Deadline::try_from(ttl.as_nanos()).unwrap_or(NEVER))
        });
        let key: Arc<str> = Arc::from(key);
        self.map.insert(
            key.clone(),
            StoredEntry {
                value: Value::Str(Packed::new(value)),
                expires_at,
            },
        );
        if expires_at != NEVER {
            if let Ok(mut heap) = self.deadlines.lock() {
                heap.push(Reverse((expires_at, key.clone())));
            }
        }
        self.notify(&key);
        self.maybe_sweep(now);
    }

    fn delete(&self, key: &str) {
        self.map.remove(key);
        self.notify(key);
        self.maybe_sweep(self.now());
    }

    /// Runs `f` on the live value of `key`; `None` when the key is absent or expired.
    fn read<R>(&self, key: &str, f: impl FnOnce(&Value) -> SpiResult<R>) -> SpiResult<Option<R>> {
        let now = self.now();
        let result = match self.map.get(key) {
            None => return Ok(None),
            Some(entry) if !entry.is_expired(now) => Some(f(&entry.value)?),
            Some(_) => None,
        };
        if result.is_none() {
            // The read guard is gone (the match ended), so removing cannot deadlock the shard.
            self.map.remove_if(key, |_, e| e.is_expired(now));
        }
        Ok(result)
    }

    /// Runs `f` on the live collection of type `T` at `key`; `None` when absent or expired.
    fn read_kind<T: Kind, R>(&self, key: &str, f: impl FnOnce(&T) -> R) -> SpiResult<Option<R>> {
        self.read(key, |v| T::get(v).map(f).ok_or_else(wrong_type))
    }

    /// Runs `f` on the collection of type `T` at `key`, atomically.
    ///
    /// With `create`, an absent (or expired) key starts as an empty collection without TTL;
    /// without it, `f` is not run and `None` is returned. A collection left empty is removed,
    /// as Redis does, so the key may later be reused with another type.
    fn modify<T: Kind, R>(
        &self,
        key: &str,
        create: bool,
        f: impl FnOnce(&mut T) -> SpiResult<R>,
    ) -> SpiResult<Option<R>> {
        let now = self.now();
        let result = match self.map.entry(Arc::from(key)) {
            Entry::Occupied(mut occupied) => {
                if occupied.get().is_expired(now) {
                    if create {
                        occupied.insert(StoredEntry {
                            value: T::default().wrap(),
                            expires_at: NEVER,
                        });
                    } else {
                        occupied.remove();
                        return Ok(None);
                    }
                }
                let coll = T::get_mut(&mut occupied.get_mut().value).ok_or_else(wrong_type)?;
                let result = f(coll);
                if coll.is_empty() {
                    occupied.remove();
                }
                result.map(Some)
            }
            Entry::Vacant(vacant) => {
                if !create {
                    return Ok(None);
                }
                let mut coll = T::default();
                let result = f(&mut coll);
                if !coll.is_empty() {
                    vacant.insert(StoredEntry {
                        value: coll.wrap(),
                        expires_at: NEVER,
                    });
                }
                result.map(Some)
            }
        };
        // Every call is a write (a compare-and-set that wrote nothing too: over-reporting
        // only costs a watcher one more read).
        self.notify(key);
        self.maybe_sweep(now);
        result
    }

    /// [`Store::modify`] for a change that cannot fail and returns nothing to the caller.
    fn update<T: Kind>(&self, key: &str, create: bool, f: impl FnOnce(&mut T)) -> SpiResult<()> {
        self.modify(key, create, |coll: &mut T| {
            f(coll);
            Ok(())
        })
        .map(drop)
    }
}

/// A [`CacheManager`] over a [`MemoryHub`]'s key space.
///
/// Guarantees (beyond the trait's): every operation is atomic on its key and never awaits;
/// a key has one type (string, hash, sorted set, list) and any other-typed operation on it
/// fails with `SpiError::Backend("WRONGTYPE ...")` like Redis; a collection emptied by
/// `hdel`/`zrem` disappears; `set` always replaces the TTL (no TTL clears it) while
/// collection writes keep the key's TTL; a TTL of zero makes the value expire at once.
/// `zadd` with a NaN score and `hincr_by` on a non-integer or overflowing field fail with
/// `SpiError::Backend`, as in Redis; `lpush` with no values is a no-op (Redis rejects it).
#[derive(Debug, Clone)]
pub struct MemoryCache {
    hub: Arc<MemoryHub>,
}

impl MemoryCache {
    /// A handle on `hub`'s key space.
    pub fn new(hub: Arc<MemoryHub>) -> Self {
        Self { hub }
    }

    /// The hub this handle reads and writes.
    pub fn hub(&self) -> &Arc<MemoryHub> {
        &self.hub
    }

    fn store(&self) -> &Store {
        &self.hub.store
    }
}

#[async_trait]
impl CacheManager for MemoryCache {
    async fn get(&self, key: &str) -> SpiResult<Option<String>> {
        self.store().get_string(key)
    }

    async fn set(&self, key: &str, value: &str, ttl: Option<Duration>) -> SpiResult<()> {
        self.store().set_string(key, value, ttl);
        Ok(())
    }

    async fn del(&self, key: &str) -> SpiResult<()> {
        self.store().delete(key);
        Ok(())
    }

    async fn hset(&self, key: &str, field: &str, value: &str) -> SpiResult<()> {
        self.store()
            .update(key, true, |h: &mut Fields| h.insert(field, value))
    }

    async fn hcompare_and_set(&self, cas: HashCas<'_>) -> SpiResult<CasOutcome> {
        // `modify` runs the closure under the map's entry lock: atomic against every other
        // call on `key`. An empty hash created for a mismatch is removed again by `modify`.
        let outcome = self.store().modify(cas.key, true, |h: &mut Fields| {
            let current = h.get(cas.field);
            if current.as_deref() == cas.expected {
                h.insert(cas.field, cas.value);
                Ok(CasOutcome::Set)
            } else {
                Ok(CasOutcome::Mismatch(current))
            }
        })?;
        Ok(outcome.unwrap_or(CasOutcome::Mismatch(None)))
    }

    async fn hget(&self, key: &str, field: &str) -> SpiResult<Option<String>> {
        Ok(self
            .store()
            .read_kind(key, |h: &Fields| h.get(field))?
            .flatten())
    }

    async fn hgetall(&self, key: &str) -> SpiResult<HashMap<String, String>> {
        Ok(self
            .store()
            .read_kind(key, Fields::to_map)?
            .unwrap_or_default())
    }

    async fn hdel(&self, key: &str, field: &str) -> SpiResult<()> {
        self.store()
            .update(key, false, |h: &mut Fields| h.remove(field))
    }

    async fn hincr_by(&self, key: &str, field: &str, delta: i64) -> SpiResult<i64> {
        let new = self.store().modify(key, true, |h: &mut Fields| {
            let old = match h.get(field) {
                None => 0,
                // Redis takes only the canonical form: no `+`, no leading zero, no `-0`.
                Some(v) => v
                    .parse::<i64>()
                    .ok()
                    .filter(|n| n.to_string() == v)
                    .ok_or_else(|| {
                        SpiError::backend(BACKEND, "ERR hash value is not an integer")
                    })?,
            };
            let new = old.checked_add(delta).ok_or_else(|| {
                SpiError::backend(BACKEND, "ERR increment or decrement would overflow")
            })?;
            h.insert(field, &new.to_string());
            Ok(new)
        })?;
        // `create` is set, so `modify` always ran the closure.
        new.ok_or_else(|| SpiError::backend(BACKEND, "hincr_by did not run"))
    }

    async fn zadd(&self, key: &str, member: &str, score: f64) -> SpiResult<()> {
        if score.is_nan() {
            return Err(SpiError::backend(BACKEND, "ERR value is not a valid float"));
        }
        // Adding 0.0 turns -0.0 into 0.0, which Redis treats as the same score.
        let score = Score(score + 0.0);
        self.store()
            .update(key, true, |z: &mut ZSet| z.add(member, score))
    }

    async fn zrem(&self, key: &str, member: &str) -> SpiResult<()> {
        self.store()
            .update(key, false, |z: &mut ZSet| z.remove(member))
    }

    async fn zcard(&self, key: &str) -> SpiResult<u64> {
        let len = self.store().read_kind(key, ZSet::len)?.unwrap_or(0);
        Ok(u64::try_from(len).unwrap_or(u64::MAX))
    }

    async fn zrange(&self, key: &str, start: i64, stop: i64) -> SpiResult<Vec<String>> {
        let members = self.store().read_kind(key, |z: &ZSet| {
            redis_range(z.len(), start, stop).map_or_else(Vec::new, |(from, to)| z.range(from, to))
        })?;
        Ok(members.unwrap_or_default())
    }

    async fn lpush(&self, key: &str, values: &[String]) -> SpiResult<()> {
        if values.is_empty() {
            return Ok(());
        }
        self.store().update(key, true, |l: &mut VecDeque<String>| {
            for v in values {
                l.push_front(v.clone());
            }
        })
    }

    async fn lrange(&self, key: &str, start: i64, stop: i64) -> SpiResult<Vec<String>> {
        let items = self.store().read_kind(key, |l: &VecDeque<String>| {
            redis_range(l.len(), start, stop)
                .map_or_else(Vec::new, |(from, to)| l.range(from..=to).cloned().collect())
        })?;
        Ok(items.unwrap_or_default())
    }

    /// Supported: a watch is told of every write before the write returns (expiry is not
    /// reported), and is never lost.
    async fn watch_prefix(
        &self,
        prefix: &str,
        watch: Arc<dyn KeyWatch>,
    ) -> SpiResult<Option<SubscriptionId>> {
        let id = self.hub.next_id();
        self.store().add_watch(id, prefix, watch);
        Ok(Some(SubscriptionId(id)))
    }

    async fn unwatch(&self, id: SubscriptionId) -> SpiResult<()> {
        self.store().remove_watch(id.0);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn redis_range_matches_redis() {
        assert_eq!(redis_range(5, 0, -1), Some((0, 4)));
        assert_eq!(redis_range(5, -2, -1), Some((3, 4)));
        assert_eq!(redis_range(5, 1, 1), Some((1, 1)));
        assert_eq!(redis_range(5, -100, 100), Some((0, 4)));
        assert_eq!(redis_range(5, 3, 1), None);
        assert_eq!(redis_range(5, 5, 10), None);
        assert_eq!(redis_range(5, 0, -6), None);
        assert_eq!(redis_range(0, 0, -1), None);
        assert_eq!(redis_range(3, i64::MIN, i64::MAX), Some((0, 2)));
    }

    /// Every key of the map holds one entry (plus its `Arc<str>` key): a server has two per
    /// bound connection (its reusable session and its route hash).
    #[test]
    fn entries_stay_small() {
        assert_eq!(std::mem::size_of::<Value>(), 24);
        assert_eq!(std::mem::size_of::<StoredEntry>(), 32);
        assert_eq!(std::mem::size_of::<Reverse<(Deadline, Arc<str>)>>(), 24);
    }

    #[tokio::test(start_paused = true)]
    async fn sweep_purges_unread_expired_keys() {
        let cache = MemoryCache::new(MemoryHub::new());
        for i in 0..100 {
            cache
                .set(&format!("k{i}"), "v", Some(Duration::from_secs(1)))
                .await
                .unwrap();
        }
        cache
            .set("kept", "v", Some(Duration::from_secs(1)))
            .await
            .unwrap();
        cache.set("kept", "v", None).await.unwrap();
        assert_eq!(cache.store().len(), 101);
        tokio::time::advance(Duration::from_secs(2)).await;
        // Any write after the interval runs the sweep; none of the expired keys is read.
        cache.set("other", "v", None).await.unwrap();
        assert_eq!(cache.store().len(), 2);
        assert_eq!(cache.get("kept").await.unwrap().as_deref(), Some("v"));
        assert!(cache.store().deadlines.lock().unwrap().is_empty());
    }

    /// A hash moves from its small vector to a table past `FEW_FIELDS` fields and keeps
    /// every field readable, replaceable and removable on both sides of the switch.
    #[tokio::test]
    async fn hash_layout_switch_keeps_every_field() {
        let cache = MemoryCache::new(MemoryHub::new());
        let n = FEW_FIELDS * 3;
        for i in 0..n {
            cache
                .hset("h", &format!("f{i}"), &format!("v{i}"))
                .await
                .unwrap();
            cache.hset("h", "f0", &format!("latest{i}")).await.unwrap();
        }
        let all = cache.hgetall("h").await.unwrap();
        assert_eq!(all.len(), n);
        assert_eq!(all["f0"], format!("latest{}", n - 1));
        for i in 1..n {
            assert_eq!(
                cache.hget("h", &format!("f{i}")).await.unwrap(),
                Some(format!("v{i}"))
            );
        }
        for i in 0..n {
            cache.hdel("h", &format!("f{i}")).await.unwrap();
            assert_eq!(cache.hgetall("h").await.unwrap().len(), n - i - 1);
        }
        assert_eq!(cache.store().len(), 0, "an emptied hash is gone");
    }

    /// A set stays uniform while every score is the same, becomes mixed at the first other
    /// score, and keeps Redis's (score, member) order on both sides of the switch.
    #[tokio::test]
    async fn zset_layout_switch_keeps_the_order() {
        let cache = MemoryCache::new(MemoryHub::new());
        for m in ["c", "a", "b", "a"] {
            cache.zadd("z", m, 0.0).await.unwrap();
        }
        let uniform = cache
            .store()
            .read_kind("z", |z: &ZSet| matches!(z, ZSet::Uniform { .. }))
            .unwrap();
        assert_eq!(uniform, Some(true));
        assert_eq!(cache.zrange("z", 0, -1).await.unwrap(), vec!["a", "b", "c"]);
        assert_eq!(cache.zrange("z", 1, 1).await.unwrap(), vec!["b"]);
        cache.zadd("z", "b", -1.0).await.unwrap();
        cache.zadd("z", "d", 0.0).await.unwrap();
        assert_eq!(
            cache.zrange("z", 0, -1).await.unwrap(),
            vec!["b", "a", "c", "d"]
        );
        assert_eq!(cache.zcard("z").await.unwrap(), 4);
        for m in ["a", "b", "c", "d"] {
            cache.zrem("z", m).await.unwrap();
        }
        assert_eq!(cache.store().len(), 0);
        // A new set takes its first member's score as the common one.
        cache.zadd("y", "x", 5.0).await.unwrap();
        cache.zadd("y", "w", 5.0).await.unwrap();
        assert_eq!(cache.zrange("y", 0, -1).await.unwrap(), vec!["w", "x"]);
        let uniform = cache
            .store()
            .read_kind("y", |z: &ZSet| matches!(z, ZSet::Uniform { .. }))
            .unwrap();
        assert_eq!(uniform, Some(true));
    }

    proptest::proptest! {
        /// Either layout orders and counts like a model of Redis's sorted set.
        #[test]
        fn zset_matches_a_model(ops in proptest::collection::vec(
            (0u8..6, proptest::sample::select(vec![0.0, 0.0, 0.0, 1.0, -1.0]), proptest::bool::ANY),
            0..40,
        )) {
            let mut z = ZSet::default();
            let mut model: HashMap<String, Score> = HashMap::new();
            for (member, score, add) in ops {
                let member = format!("m{member}");
                if add {
                    z.add(&member, Score(score));
                    model.insert(member, Score(score));
                } else {
                    z.remove(&member);
                    model.remove(&member);
                }
                let mut want: Vec<(Score, String)> =
                    model.iter().map(|(m, s)| (*s, m.clone())).collect();
                want.sort();
                let want: Vec<String> = want.into_iter().map(|(_, m)| m).collect();
                proptest::prop_assert_eq!(z.len(), model.len());
                let got = if want.is_empty() { Vec::new() } else { z.range(0, want.len() - 1) };
                proptest::prop_assert_eq!(got, want);
            }
        }
    }

    /// A large value makes the hash a table at once (a write to a packed block copies it),
    /// and every field stays readable.
    #[tokio::test]
    async fn a_large_value_makes_a_hash_a_table() {
        let cache = MemoryCache::new(MemoryHub::new());
        cache.hset("h", "a", "small").await.unwrap();
        let large = "v".repeat(FEW_VALUE_MAX + 1);
        cache.hset("h", "b", &large).await.unwrap();
        let many = cache
            .store()
            .read_kind("h", |h: &Fields| matches!(h, Fields::Many(_)))
            .unwrap();
        assert_eq!(many, Some(true));
        assert_eq!(
            cache.hget("h", "a").await.unwrap().as_deref(),
            Some("small")
        );
        assert_eq!(cache.hget("h", "b").await.unwrap(), Some(large));
    }

    /// `hincr_by` reads only what Redis reads as an integer.
    #[tokio::test]
    async fn hincr_by_takes_canonical_integers_only() {
        let cache = MemoryCache::new(MemoryHub::new());
        for bad in ["+5", "007", "-0", " 1", "1.0"] {
            cache.hset("h", "f", bad).await.unwrap();
            assert!(cache.hincr_by("h", "f", 1).await.is_err(), "{bad}");
        }
        cache.hset("h", "f", "-7").await.unwrap();
        assert_eq!(cache.hincr_by("h", "f", 10).await.unwrap(), 3);
    }

    /// Re-adding a member moves it in the order (the index and the order share the member).
    #[tokio::test]
    async fn zadd_again_moves_the_member() {
        let cache = MemoryCache::new(MemoryHub::new());
        cache.zadd("z", "a", 1.0).await.unwrap();
        cache.zadd("z", "b", 2.0).await.unwrap();
        cache.zadd("z", "a", 3.0).await.unwrap();
        cache.zadd("z", "b", 2.0).await.unwrap();
        assert_eq!(cache.zrange("z", 0, -1).await.unwrap(), vec!["b", "a"]);
        assert_eq!(cache.zcard("z").await.unwrap(), 2);
        cache.zrem("z", "b").await.unwrap();
        assert_eq!(cache.zrange("z", 0, -1).await.unwrap(), vec!["a"]);
        cache.zrem("z", "a").await.unwrap();
        assert_eq!(cache.store().len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn collection_writes_keep_an_expired_key_fresh() {
        let cache = MemoryCache::new(MemoryHub::new());
        cache
            .set("k", "v", Some(Duration::from_millis(10)))
            .await
            .unwrap();
        tokio::time::advance(Duration::from_millis(20)).await;
        // The expired string is gone, so the key takes the new type and no TTL.
        cache.hset("k", "f", "1").await.unwrap();
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(cache.hget("k", "f").await.unwrap().as_deref(), Some("1"));
    }
}
