//! What happens to keys no field reads: MPush keys mpush-rs accepts without using (silently, or
//! with a start-up warning when they would tune something), and unknown keys (an error with a
//! "did you mean" inside the sections mpush-rs implements, a warning elsewhere under `mp`).
//!
//! The deserializer reports every key it skips (`serde_ignored`); [`apply_policy`] sorts them.

use std::sync::OnceLock;

use hocon::HoconValue;

use super::core::CORE_UNUSED;
use super::de::{field_names, hocon_to_json, suggest};
use super::net::NET_UNUSED;
use super::push::FlowControlKeys;
use super::redis::REDIS_UNUSED;
use super::security::SECURITY_UNUSED;
use super::spi::SPI_UNUSED;
use super::zk::ZK_UNUSED;
use super::{
    ConfigError, CoreConfig, HttpConfig, MPushConfig, NetConfig, PushConfig, RedisConfig,
    SecurityConfig, SpiConfig, ZkConfig, wrong_type,
};

/// Top-level `mp.*` keys of MPush deployments that mpush-rs accepts without using.
const MP_UNUSED: &[&str] = &[
    "home",
    "log-level",
    "log-dir",
    "log-conf-path",
    "log",
    "thread",
    "monitor",
    "conf",
    "snowflake",
];

/// MPush tuning keys (or sections) that mpush-rs accepts for compatibility but does not
/// implement: an operator who sets one expects an effect, so start-up warns about it.
const TUNING_WITHOUT_EFFECT: [&str; 4] = [
    "mp.net.snd_buf",
    "mp.net.rcv_buf",
    "mp.net.traffic-shaping",
    "mp.thread",
];

/// MPush's `reference.conf` values for [`TUNING_WITHOUT_EFFECT`]: a file that repeats them
/// (a copied `mpush.conf`) tunes nothing, so only other values are reported.
const TUNING_DEFAULTS: &str = r#"mp {
    net {
        snd_buf { connect-server=32k, gateway-server=0, gateway-client=0 }
        rcv_buf { connect-server=32k, gateway-server=0, gateway-client=0 }
        traffic-shaping {
            gateway-client { enabled:false, check-interval:100ms, write-global-limit:30k, read-global-limit:0, write-channel-limit:3k, read-channel-limit:0 }
            gateway-server { enabled:false, check-interval:100ms, write-global-limit:0, read-global-limit:30k, write-channel-limit:0, read-channel-limit:3k }
            connect-server { enabled:false, check-interval:100ms, write-global-limit:0, read-global-limit:100k, write-channel-limit:3k, read-channel-limit:3k }
        }
    }
    thread.pool {
        conn-work:0, gateway-server-work:0, http-work:0, ack-timer:1, push-task:0,
        gateway-client-work:0, push-client:2
        event-bus { min:1, max:16, queue-size:10000 }
        mq { min:1, max:4, queue-size:10000 }
    }
}"#;

/// Nested objects of the file that a section struct reads as dotted keys
/// (`write-buffer-water-mark.connect-server-low`): (section, group, children must be objects).
const GROUPS: [(&str, &str, bool); 2] = [
    ("net", "write-buffer-water-mark", false),
    ("push", "flow-control", true),
];

/// Checks that `mp` and its sections are objects (so a scalar in their place gets a clear
/// message) and lifts the [`GROUPS`] into their sections.
pub(super) fn prepare(mp: &mut HoconValue) -> Result<(), ConfigError> {
    let HoconValue::Object(sections) = mp else {
        return Err(wrong_type("mp", "an object", mp));
    };
    let known = field_names::<MPushConfig>();
    for (name, v) in sections.iter() {
        if known.contains(&name.as_str()) && !v.is_object() {
            return Err(wrong_type(&format!("mp.{name}"), "an object", v));
        }
    }
    for (section, group, objects) in GROUPS {
        let Some(HoconValue::Object(map)) = sections.get_mut(section) else {
            continue;
        };
        let Some(v) = map.shift_remove(group) else {
            continue;
        };
        let key = format!("mp.{section}.{group}");
        let HoconValue::Object(children) = v else {
            return Err(wrong_type(&key, "an object", &v));
        };
        for (k, child) in children {
            if objects && !child.is_object() {
                return Err(wrong_type(&format!("{key}.{k}"), "an object", &child));
            }
            map.insert(format!("{group}.{k}"), child);
        }
    }
    Ok(())
}

/// The keys of a `serde_ignored` path, relative to `mp` (list elements as `[i]`).
pub(super) fn segments(path: &serde_ignored::Path<'_>, out: &mut Vec<String>) {
    use serde_ignored::Path;
    match path {
        Path::Root => {}
        Path::Seq { parent, index } => {
            segments(parent, out);
            out.push(format!("[{index}]"));
        }
        Path::Map { parent, key } => {
            segments(parent, out);
            out.push(key.clone());
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => {
            segments(parent, out);
        }
    }
}

/// `key` as a `&'static str` if it is the full key of a field (`mp.net.connect-server-port`),
/// for [`ConfigError::Invalid`].
pub(super) fn static_key(key: &str) -> Option<&'static str> {
    static KEYS: OnceLock<Vec<String>> = OnceLock::new();
    let keys = KEYS.get_or_init(|| {
        let mut keys = Vec::new();
        for section in field_names::<MPushConfig>() {
            let parent = [section.to_string()];
            for field in keys_at(&parent).map_or(&[][..], |(fields, _)| fields) {
                keys.push(format!("mp.{section}.{field}"));
                let nested = [section.to_string(), field.to_string()];
                for leaf in keys_at(&nested).map_or(&[][..], |(fields, _)| fields) {
                    keys.push(format!("mp.{section}.{field}.{leaf}"));
                }
            }
        }
        keys
    });
    keys.iter().find(|k| k.as_str() == key).map(String::as_str)
}

/// `mp.a.b[0].c` for segments `a`, `b`, `[0]`, `c`.
fn full_key(segments: &[String]) -> String {
    let mut key = "mp".to_string();
    for s in segments {
        if !s.starts_with('[') {
            key.push('.');
        }
        key.push_str(s);
    }
    key
}

/// What a struct at `parent` reads and which other MPush keys it accepts; `None` for `mp`
/// itself, where unknown keys are only warned about.
fn keys_at(parent: &[String]) -> Option<(&'static [&'static str], &'static [&'static str])> {
    let parent: Vec<&str> = parent.iter().map(String::as_str).collect();
    Some(match parent.as_slice() {
        ["core"] => (field_names::<CoreConfig>(), CORE_UNUSED),
        ["security"] => (field_names::<SecurityConfig>(), SECURITY_UNUSED),
        ["net"] => (field_names::<NetConfig>(), NET_UNUSED),
        ["zk"] => (field_names::<ZkConfig>(), ZK_UNUSED),
        ["redis"] => (field_names::<RedisConfig>(), REDIS_UNUSED),
        ["push"] => (field_names::<PushConfig>(), &[]),
        ["spi"] => (field_names::<SpiConfig>(), SPI_UNUSED),
        ["http"] => (field_names::<HttpConfig>(), &[]),
        ["push", "flow-control.global" | "flow-control.broadcast"] => {
            (field_names::<FlowControlKeys>(), &[])
        }
        _ => return None,
    })
}

/// Sorts the keys the deserializer skipped: MPush keys without effect are accepted (the tuning
/// ones that differ from MPush's default are returned, for
/// [`MPushConfig::settings_without_effect`]); unknown keys inside an implemented section are an
/// error, so a typo does not silently fall back to a default; other unknown `mp.*` keys are
/// logged.
pub(super) fn apply_policy(
    mp: &HoconValue,
    ignored: &[Vec<String>],
) -> Result<Vec<String>, ConfigError> {
    let mut tuned: Vec<(usize, Vec<String>)> = Vec::new();
    for path in ignored {
        let Some((key, parent)) = path.split_last() else {
            continue;
        };
        let full = full_key(path);
        let (fields, unused, top_level) = match keys_at(parent) {
            Some((fields, unused)) => (fields, unused, false),
            None if parent.is_empty() => (field_names::<MPushConfig>(), MP_UNUSED, true),
            None => (&[][..], &[][..], false),
        };
        if unused.contains(&key.as_str()) {
            if full == "mp.redis.cluster-group" {
                tracing::warn!(
                    "mp.redis.cluster-group (MPush 0.0.x) is ignored; use mp.redis.nodes=[\"ip:port\", ...]"
                );
            }
            if let Some(rank) = TUNING_WITHOUT_EFFECT.iter().position(|t| *t == full) {
                if let Some(v) = lookup(mp, path) {
                    tuned.push((rank, tuned_keys(&full, v)));
                }
            }
            continue;
        }
        let hint = suggest(key, fields.iter().chain(unused).copied())
            .map(|s| {
                format!(
                    " (did you mean {}?)",
                    full_key(&[parent, &[s.to_string()]].concat())
                )
            })
            .unwrap_or_default();
        let message = format!("unknown key {full}{hint}");
        if top_level {
            tracing::warn!("{message}; ignored");
        } else {
            return Err(ConfigError::Parse(message));
        }
    }
    // Reported in TUNING_WITHOUT_EFFECT order, whatever order the file uses.
    tuned.sort_by_key(|(rank, _)| *rank);
    Ok(tuned.into_iter().flat_map(|(_, keys)| keys).collect())
}

fn lookup<'a>(mp: &'a HoconValue, path: &[String]) -> Option<&'a HoconValue> {
    path.iter()
        .try_fold(mp, |v, key| v.as_object().and_then(|map| map.get(key)))
}

/// The full keys of the scalars at or below `key` whose value differs from MPush's default.
fn tuned_keys(key: &str, v: &HoconValue) -> Vec<String> {
    static DEFAULTS: OnceLock<Option<hocon::Config>> = OnceLock::new();
    let defaults = DEFAULTS.get_or_init(|| {
        hocon::parse_string_with_options(TUNING_DEFAULTS, hocon::ParseOptions::defaults()).ok()
    });
    let mut out = Vec::new();
    collect_tuned(key, v, defaults.as_ref(), &mut out);
    out.sort();
    out
}

fn collect_tuned(
    key: &str,
    v: &HoconValue,
    defaults: Option<&hocon::Config>,
    out: &mut Vec<String>,
) {
    match v {
        HoconValue::Object(map) if !map.is_empty() => {
            for (k, child) in map.iter() {
                collect_tuned(&format!("{key}.{k}"), child, defaults, out);
            }
        }
        // An empty object (`dns-mapping {}`) sets nothing.
        HoconValue::Object(_) => {}
        _ => {
            let default = defaults.and_then(|d| d.get(key)).map(hocon_to_json);
            if default != Some(hocon_to_json(v)) {
                out.push(key.to_string());
            }
        }
    }
}
