//! Serde helpers for MPush's value formats (durations, sizes, integers, strings, maps) and
//! the small HOCON utilities the loader shares.
//!
//! The helpers are written against any self-describing deserializer, so they work through the
//! `serde_ignored` and `serde_path_to_error` wrappers the loader puts around the HOCON
//! deserializer. Their messages say what was expected and what was found; the loader prefixes
//! the full `mp.*` key.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use hocon::serde::HoconDeserializer;
use hocon::{HoconValue, ScalarType, ScalarValue};
use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};

const DURATION: &str = "a duration such as 500ms, 10s, 3m or 1d (a plain number is milliseconds)";
const SIZE: &str = "a size such as 10k, 10m or a plain number of bytes";

/// Starts the message of a well-typed value outside its type's range. The loader strips it and
/// reports [`ConfigError::Invalid`](super::ConfigError::Invalid), as for any other value out of
/// range, instead of a parse error.
pub(crate) const OUT_OF_RANGE: &str = "\u{1}";

fn out_of_range<E: de::Error>(message: String) -> E {
    E::custom(format!("{OUT_OF_RANGE}{message}"))
}

fn got<E: de::Error>(expected: &str, found: impl fmt::Display) -> E {
    E::custom(format!("expected {expected}, got {found}"))
}

/// Generates the visitor methods that reject everything but what a visitor accepts, with an
/// "expected X, got Y" message.
macro_rules! reject {
    (scalars) => {
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Err(got(self.expected(), v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Err(got(self.expected(), v))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Err(got(self.expected(), v))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Err(got(self.expected(), v))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Err(got(self.expected(), format_args!("{v:?}")))
        }
    };
    (null) => {
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Err(got(self.expected(), "null"))
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Err(got(self.expected(), "null"))
        }
    };
    (map) => {
        fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(got(self.expected(), "an object"))
        }
    };
    (seq) => {
        fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(got(self.expected(), "a list"))
        }
    };
}

/// Reads one scalar (string, number or boolean) back into a HOCON scalar, so the HOCON unit
/// readers can parse it; objects, lists and null are refused naming `expected`.
struct ScalarVisitor(&'static str);

impl ScalarVisitor {
    fn expected(&self) -> &'static str {
        self.0
    }
}

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = ScalarValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<ScalarValue, E> {
        Ok(ScalarValue::boolean(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<ScalarValue, E> {
        Ok(ScalarValue::number(v.to_string()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<ScalarValue, E> {
        Ok(ScalarValue::number(v.to_string()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<ScalarValue, E> {
        Ok(ScalarValue::number(v.to_string()))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<ScalarValue, E> {
        Ok(ScalarValue::string(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<ScalarValue, E> {
        Ok(ScalarValue::string(v))
    }

    reject!(null);
    reject!(map);
    reject!(seq);
}

fn scalar<'de, D: Deserializer<'de>>(
    d: D,
    expected: &'static str,
) -> Result<ScalarValue, D::Error> {
    d.deserialize_any(ScalarVisitor(expected))
}

/// How a scalar reads in an error message: strings quoted, numbers as written.
pub(crate) fn describe_scalar(s: &ScalarValue) -> String {
    if s.value_type == ScalarType::String {
        format!("{:?}", s.raw)
    } else {
        s.raw.clone()
    }
}

/// How any HOCON value reads in an error message.
pub(crate) fn describe(v: &HoconValue) -> String {
    match v {
        HoconValue::Scalar(s) => describe_scalar(s),
        HoconValue::Object(_) => "an object".to_string(),
        HoconValue::Array(_) => "a list".to_string(),
        _ => "an unresolved value".to_string(),
    }
}

/// A duration with HOCON's units (`500ms`, `10s`, `3m` = 3 minutes, `1h`, `1d`); a plain
/// number is milliseconds. Read by the same rules as `hocon::Config::get_duration`.
pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = scalar(d, DURATION)?;
    let v = HoconValue::Scalar(s);
    hocon::serde::duration::deserialize(HoconDeserializer::new(&v))
        .map_err(|_| got(DURATION, describe(&v)))
}

/// A byte size (`10k` = 10240, `10m` = 10 MiB, a plain number is bytes). Read by the same rules
/// as `hocon::Config::get_bytes`.
pub(crate) fn size<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let s = scalar(d, SIZE)?;
    let v = HoconValue::Scalar(s);
    let n: i64 = hocon::serde::bytes::deserialize(HoconDeserializer::new(&v))
        .map_err(|_| got(SIZE, describe(&v)))?;
    usize::try_from(n).map_err(|_| out_of_range(format!("{n} bytes is too large")))
}

/// Integer field types and the range an error message names.
pub(crate) trait Int: Sized + TryFrom<i128> {
    /// `MIN..=MAX`, for "must be 0..=65535, got 70000".
    fn range() -> String;
}

macro_rules! int_types {
    ($($t:ty),*) => {$(
        impl Int for $t {
            fn range() -> String {
                format!("{}..={}", <$t>::MIN, <$t>::MAX)
            }
        }
    )*};
}
int_types!(u16, u32, u64, usize);

/// An integer: a number, or a string of one (what `${?VAR}` gives), also written as a whole
/// float (`1e3`), as HOCON's `get_i64` reads it.
pub(crate) fn int<'de, D: Deserializer<'de>, T: Int>(d: D) -> Result<T, D::Error> {
    let s = scalar(d, "an integer")?;
    if s.value_type == ScalarType::Boolean {
        return Err(got("an integer", describe_scalar(&s)));
    }
    let text = s.raw.trim();
    let n = text.parse::<i128>().ok().or_else(|| {
        text.parse::<f64>()
            .ok()
            .filter(|f| f.is_finite() && f.fract() == 0.0 && f.abs() < 1e19)
            // The filter keeps the value exactly representable as an i128.
            .map(|f| f as i128)
    });
    let n = n.ok_or_else(|| got("an integer", describe_scalar(&s)))?;
    T::try_from(n).map_err(|_| out_of_range(format!("must be {}, got {n}", T::range())))
}

/// A string; numbers and booleans are read as written (`password=123456`).
pub(crate) fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(scalar(d, "a string")?.raw)
}

/// A string map value, read by [`string`].
struct Text(String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        string(d).map(Text)
    }
}

/// An object whose values are read as `V`, refusing a non-object naming `expected`.
struct ObjectVisitor<V>(&'static str, PhantomData<V>);

impl<V> ObjectVisitor<V> {
    fn expected(&self) -> &'static str {
        self.0
    }
}

impl<'de, V: Deserialize<'de>> Visitor<'de> for ObjectVisitor<V> {
    type Value = Vec<(String, V)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, V>()? {
            out.push((k, v));
        }
        Ok(out)
    }

    reject!(scalars);
    reject!(null);
    reject!(seq);
}

/// `connect-server-register-attr`: any object, merged over the default `{weight:1}` as Java's
/// `withFallback(reference.conf)` does.
pub(crate) fn register_attr<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, serde_json::Value>, D::Error> {
    let entries =
        d.deserialize_any(ObjectVisitor::<serde_json::Value>("an object", PhantomData))?;
    let mut attr = super::NetConfig::default().connect_server_register_attr;
    attr.extend(entries);
    Ok(attr)
}

/// `public-host-mapping`: `{"local-ip":"public-ip", ...}`.
pub(crate) fn string_map<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    let entries = d.deserialize_any(ObjectVisitor::<Text>(
        "an object of \"local-ip\":\"public-ip\"",
        PhantomData,
    ))?;
    Ok(entries.into_iter().map(|(k, Text(v))| (k, v)).collect())
}

const NODES: &str = "a list of \"ip:port\" strings";

/// `mp.redis.nodes`: `"ip:port[:password]"` strings, or the older object form
/// `{host, port, password}` converted to that string form.
pub(crate) fn redis_nodes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct Nodes;
    impl Nodes {
        fn expected(&self) -> &'static str {
            NODES
        }
    }
    impl<'de> Visitor<'de> for Nodes {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(NODES)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut out = Vec::new();
            while let Some(RedisNode(node)) = seq.next_element()? {
                out.push(node);
            }
            Ok(out)
        }
        reject!(scalars);
        reject!(null);
        reject!(map);
    }
    d.deserialize_any(Nodes)
}

/// One `mp.redis.nodes` entry.
struct RedisNode(String);

impl<'de> Deserialize<'de> for RedisNode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Node;
        impl<'de> Visitor<'de> for Node {
            type Value = String;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(NODES)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<String, A::Error> {
                Err(got(NODES, "a list"))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<String, A::Error> {
                // Other keys of the object form are ignored, as MPush's own parser does.
                let (mut host, mut port, mut password) = (None, None, None);
                while let Some(key) = map.next_key::<String>()? {
                    let value: serde_json::Value = map.next_value()?;
                    let text = match &value {
                        serde_json::Value::String(s) => Some(s.clone()),
                        serde_json::Value::Number(n) => Some(n.to_string()),
                        _ => None,
                    };
                    match key.as_str() {
                        "host" => host = text,
                        // A string port is what `port=${?REDIS_PORT}` gives.
                        "port" => port = text.and_then(|t| t.parse::<u16>().ok()),
                        "password" => password = text,
                        _ => {}
                    }
                }
                match (host, port, password) {
                    (Some(h), Some(p), Some(pw)) if !pw.is_empty() => Ok(format!("{h}:{p}:{pw}")),
                    (Some(h), Some(p), _) => Ok(format!("{h}:{p}")),
                    _ => Err(got(
                        NODES,
                        "an object without a string host and a number port",
                    )),
                }
            }
        }
        d.deserialize_any(Node).map(RedisNode)
    }
}

/// The field names a derived `Deserialize` struct knows (its kebab-case keys), for "did you
/// mean" hints; read from what the derive passes to `deserialize_struct`.
pub(crate) fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Probe<'a>(&'a mut &'static [&'static str]);
    impl<'de> Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("field names probed"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    // The probe always errors: only the recorded field list matters.
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

/// The closest of `known`, if it is close enough to be a plausible typo of `key` (dashes,
/// underscores and case ignored, so `session-timeout-ms` finds `sessionTimeoutMs`).
pub(crate) fn suggest<'a>(key: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let norm = |s: &str| -> String {
        s.chars()
            .filter(|c| !matches!(c, '-' | '_'))
            .flat_map(char::to_lowercase)
            .collect()
    };
    let key = norm(key);
    let limit = 2.max(key.chars().count() / 5);
    known
        .into_iter()
        .map(|k| (strsim::levenshtein(&key, &norm(k)), k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// A HOCON value as JSON, to compare values independently of how they were written.
pub(crate) fn hocon_to_json(v: &HoconValue) -> serde_json::Value {
    use serde_json::Value;
    match v {
        HoconValue::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), hocon_to_json(v)))
                .collect(),
        ),
        HoconValue::Array(items) => Value::Array(items.iter().map(hocon_to_json).collect()),
        HoconValue::Scalar(s) => match s.value_type {
            ScalarType::Null => Value::Null,
            ScalarType::Boolean => v.as_bool().map_or(Value::Null, Value::Bool),
            ScalarType::Number => s
                .raw
                .parse::<i64>()
                .map(Value::from)
                .ok()
                .or_else(|| {
                    s.raw
                        .parse::<f64>()
                        .ok()
                        .and_then(serde_json::Number::from_f64)
                        .map(Value::Number)
                })
                .unwrap_or_else(|| Value::String(s.raw.clone())),
            _ => Value::String(s.raw.clone()),
        },
        _ => Value::Null,
    }
}

/// Formats a duration in the largest HOCON unit that represents it exactly (`3m`, `10s`, `500ms`).
pub(crate) fn fmt_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_string();
    }
    if d.subsec_nanos() == 0 {
        let s = d.as_secs();
        return match s {
            _ if s.is_multiple_of(86_400) => format!("{}d", s / 86_400),
            _ if s.is_multiple_of(3_600) => format!("{}h", s / 3_600),
            _ if s.is_multiple_of(60) => format!("{}m", s / 60),
            _ => format!("{s}s"),
        };
    }
    if d.subsec_nanos().is_multiple_of(1_000_000) {
        return format!("{}ms", d.as_millis());
    }
    format!("{d:?}")
}

/// A boolean: `true`/`false` (also HOCON's `yes`/`no`/`on`/`off`, and those as strings).
pub(crate) fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let s = scalar(d, "a boolean")?;
    match s.raw.trim() {
        "true" | "yes" | "on" => Ok(true),
        "false" | "no" | "off" => Ok(false),
        _ => Err(got("a boolean", describe_scalar(&s))),
    }
}

/// A list of strings, each read by [`string`].
pub(crate) fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let items: Vec<Text> = Vec::deserialize(d)?;
    Ok(items.into_iter().map(|Text(s)| s).collect())
}

/// A list of strings as a map value (for [`string_list_map`]).
struct TextList(Vec<String>);

impl<'de> Deserialize<'de> for TextList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        string_list(d).map(TextList)
    }
}

/// `mp.http.dns-mapping`: `{"domain":["ip:port", ...], ...}`.
pub(crate) fn string_list_map<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, Vec<String>>, D::Error> {
    let entries = d.deserialize_any(ObjectVisitor::<TextList>(
        "an object of \"domain\":[\"ip:port\", ...]",
        PhantomData,
    ))?;
    Ok(entries.into_iter().map(|(k, TextList(v))| (k, v)).collect())
}
