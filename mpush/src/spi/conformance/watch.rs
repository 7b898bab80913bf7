//! The key-watch conformance suite ([`CacheManager::watch_prefix`]).

use std::sync::{Arc, Mutex};

use super::{call, eventually, lock};
use crate::spi::{CacheManager, HashCas, KeyWatch};

/// What a watch was told, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Changed(String),
    Lost,
    Watching,
}

/// A [`KeyWatch`] that records its calls.
#[derive(Debug, Default)]
pub struct RecordingWatch {
    events: Mutex<Vec<Event>>,
}

impl RecordingWatch {
    /// Keys reported changed so far, in order.
    pub fn changed(&self) -> Vec<String> {
        lock(&self.events)
            .iter()
            .filter_map(|e| match e {
                Event::Changed(k) => Some(k.clone()),
                _ => None,
            })
            .collect()
    }

    /// `(lost, watching)` calls so far.
    pub fn transitions(&self) -> (usize, usize) {
        let events = lock(&self.events);
        let count = |want: &Event| events.iter().filter(|e| *e == want).count();
        (count(&Event::Lost), count(&Event::Watching))
    }

    /// `true` if the last lost/watching call was `watching` (the watch is in place).
    pub fn is_watching(&self) -> bool {
        lock(&self.events)
            .iter()
            .rev()
            .find(|e| !matches!(e, Event::Changed(_)))
            == Some(&Event::Watching)
    }
}

impl KeyWatch for RecordingWatch {
    fn changed(&self, key: &str) {
        lock(&self.events).push(Event::Changed(key.to_string()));
    }
    fn lost(&self) {
        lock(&self.events).push(Event::Lost);
    }
    fn watching(&self) {
        lock(&self.events).push(Event::Watching);
    }
}

/// Waits until `watch` has reported `key` changed.
pub async fn wait_changed(watch: &RecordingWatch, key: &str) {
    eventually(&format!("change of {key} reported"), || {
        let seen = watch.changed();
        if seen.iter().any(|k| k == key) {
            Ok(())
        } else {
            Err(format!("reported so far: {seen:?}"))
        }
    })
    .await;
}

/// Checks [`CacheManager::watch_prefix`] on a backend that supports it (it panics on
/// `None`): the watch is in place when the call returns; `set`, `hset`, a
/// `hcompare_and_set` that wrote, `hdel` and `del` of a key under the prefix are reported;
/// a key outside it is not (checked by order: it is written first, and a later key under
/// the prefix is reported without it); after `unwatch` nothing new is reported, while a
/// second watch of the prefix still is. Every key starts with `prefix`.
pub async fn cache_watch(cache: Arc<dyn CacheManager>, prefix: &str) {
    let watched = format!("{prefix}watched:");
    let key = |name: &str| format!("{watched}{name}");
    let outside = format!("{prefix}outside");
    for k in [key("s"), key("h"), key("after"), outside.clone()] {
        call("del (cleanup before)", cache.del(&k)).await;
    }

    let first = Arc::new(RecordingWatch::default());
    let id = call("watch_prefix", cache.watch_prefix(&watched, first.clone()))
        .await
        .unwrap_or_else(|| panic!("conformance: this backend does not support watch_prefix"));
    assert!(
        first.is_watching(),
        "conformance: watch_prefix returned before calling KeyWatch::watching"
    );

    call("set outside the prefix", cache.set(&outside, "x", None)).await;
    call("set", cache.set(&key("s"), "1", None)).await;
    wait_changed(&first, &key("s")).await;
    assert!(
        !first.changed().contains(&outside),
        "conformance: a key outside the watched prefix was reported: {:?}",
        first.changed()
    );

    let reported =
        |watch: &RecordingWatch, k: &str| watch.changed().iter().filter(|c| *c == k).count();
    for (what, step) in [
        ("hset", 0),
        ("hcompare_and_set", 1),
        ("hdel", 2),
        ("del", 3),
    ] {
        let before = reported(&first, &key("h"));
        match step {
            0 => call(what, cache.hset(&key("h"), "f", "1")).await,
            1 => {
                let cas = HashCas {
                    key: &key("h"),
                    field: "f",
                    expected: Some("1"),
                    value: "2",
                };
                call(what, cache.hcompare_and_set(cas)).await;
            }
            2 => {
                call("hset", cache.hset(&key("h"), "g", "1")).await;
                call(what, cache.hdel(&key("h"), "f")).await;
            }
            _ => call(what, cache.del(&key("h"))).await,
        }
        eventually(&format!("{what} of a watched key reported"), || {
            let now = reported(&first, &key("h"));
            if now > before {
                Ok(())
            } else {
                Err(format!("{now} reports of {}", key("h")))
            }
        })
        .await;
    }

    let second = Arc::new(RecordingWatch::default());
    let id2 = call(
        "watch_prefix (second)",
        cache.watch_prefix(&watched, second.clone()),
    )
    .await
    .unwrap_or_else(|| panic!("conformance: a second watch_prefix was refused"));
    call("unwatch", cache.unwatch(id)).await;
    call("set after unwatch", cache.set(&key("after"), "1", None)).await;
    wait_changed(&second, &key("after")).await;
    assert!(
        !first.changed().contains(&key("after")),
        "conformance: a watch was told of a change after unwatch returned"
    );
    call("unwatch (second)", cache.unwatch(id2)).await;
    call("unwatch (unknown id)", cache.unwatch(id)).await;

    for k in [key("s"), key("h"), key("after"), outside] {
        call("del (cleanup after)", cache.del(&k)).await;
    }
}
