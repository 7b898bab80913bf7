//! Compact, exact encodings of the text the store holds: [`Packed`] strings and [`PackedPairs`].
//!
//! A server holds a few small values per bound connection, nearly all in two MPush formats:
//! the reusable session (`osName,osVersion,clientVersion,deviceId,<key>,<iv>`, key and iv as
//! 16 signed decimals joined by `|`) and the route (ClientLocation JSON with fixed keys). As
//! text they are 150 and 110 bytes; most of that is the decimal rendering of 32 bytes and the
//! JSON keys. Like Redis's compact encodings (embstr, listpack), the store keeps them in a
//! smaller form and gives back exactly the text it was given: `decode(encode(s)) == s` for
//! every string, whatever its format (a text in neither format is stored as it is).
//!
//! The encoding is the text's UTF-8 with two kinds of substitution, marked by bytes that
//! never occur in UTF-8 (`0xF5..=0xFF`), so a marker is never confused with text:
//! - a comma-separated field that is exactly 16 canonical `i8` decimals joined by `|`
//!   becomes [`LIST16`] and the 16 bytes;
//! - each of [`PHRASES`] (the ClientLocation JSON's keys and punctuation) becomes one byte.
//!
//! Encoding is deterministic, so two strings are equal exactly when their encodings are.

/// Marks 16 raw bytes that stand for 16 signed decimals joined by `|`.
const LIST16: u8 = 0xFF;
/// The marker of `PHRASES[0]`; `PHRASES[i]` is `PHRASE_BASE + i`.
const PHRASE_BASE: u8 = 0xF5;
/// Text substituted by one byte: the keys of the ClientLocation JSON in the order MPush
/// writes them (`router::location` and the Java original). At most 10 (`0xF5..=0xFE`, checked
/// at compile time below).
const PHRASES: [&str; 7] = [
    "{\"port\":",
    ",\"host\":\"",
    "\",\"deviceId\":\"",
    "\",\"osName\":\"",
    "\",\"clientVersion\":\"",
    "\",\"connId\":\"",
    "\"}",
];

// 0xF5..=0xFF start no UTF-8 sequence and continue none, and the phrase markers stay below
// the list marker.
const _: () =
    assert!(PHRASE_BASE >= 0xF5 && PHRASE_BASE as usize + PHRASES.len() <= LIST16 as usize);

/// The `i8` decimals of a [`LIST16`] field.
const LIST_LEN: usize = 16;

/// A string in the packed form (see the module doc); one allocation of exactly its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Packed(Box<[u8]>);

impl Packed {
    /// Packs `text`.
    pub(crate) fn new(text: &str) -> Self {
        let mut out = Vec::with_capacity(text.len());
        encode_into(text, &mut out);
        Self(out.into_boxed_slice())
    }

    /// The text this was made from.
    pub(crate) fn text(&self) -> String {
        decode(&self.0)
    }
}

/// The packed form of `text`, appended to `out`.
fn encode_into(text: &str, out: &mut Vec<u8>) {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if i == 0 || bytes[i - 1] == b',' {
            let end = bytes[i..]
                .iter()
                .position(|&b| b == b',')
                .map_or(bytes.len(), |p| i + p);
            if let Some(list) = parse_list16(&text[i..end]) {
                out.push(LIST16);
                out.extend_from_slice(&list);
                i = end;
                continue;
            }
        }
        // Every phrase starts with one of these: most bytes are copied without a search.
        let phrase = matches!(bytes[i], b'{' | b',' | b'"')
            .then(|| {
                (PHRASE_BASE..)
                    .zip(PHRASES)
                    .find(|(_, p)| bytes[i..].starts_with(p.as_bytes()))
            })
            .flatten();
        if let Some((marker, phrase)) = phrase {
            out.push(marker);
            i += phrase.len();
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
}

/// The 16 bytes of `field` when it is 16 `i8` in canonical decimal (no sign on 0, no leading
/// zeros, no `+`) joined by `|`: only then does rendering them give `field` back.
fn parse_list16(field: &str) -> Option<[u8; LIST_LEN]> {
    // The shortest such field is 31 bytes, the longest 79: cheap to rule out the rest.
    if !(2 * LIST_LEN - 1..=5 * LIST_LEN - 1).contains(&field.len()) {
        return None;
    }
    let mut list = [0u8; LIST_LEN];
    let mut parts = field.split('|');
    for slot in &mut list {
        let part = parts.next()?;
        let value: i8 = part.parse().ok()?;
        if !canonical(part, value) {
            return None;
        }
        *slot = value.to_ne_bytes()[0];
    }
    parts.next().is_none().then_some(list)
}

/// Whether `part` is how `value` renders (`i8`'s `Display`): `parse` also accepts a `+`, a
/// leading zero and `-0`, which are left as text.
fn canonical(part: &str, value: i8) -> bool {
    value.to_string() == part
}

/// The text of a packed buffer. The store only decodes what `encode_into` made; a truncated
/// list marker (never written) ends the text instead of panicking.
///
/// Literal stretches are copied whole and the result is allocated once at its exact size:
/// a large plain value costs one copy (reads run under the key map's shard lock).
fn decode(packed: &[u8]) -> String {
    let mut out = Vec::with_capacity(decoded_len(packed));
    let mut rest = packed;
    while !rest.is_empty() {
        let literal = rest
            .iter()
            .position(|&b| b >= PHRASE_BASE)
            .unwrap_or(rest.len());
        out.extend_from_slice(&rest[..literal]);
        let Some((&marker, after)) = rest[literal..].split_first() else {
            break;
        };
        rest = after;
        if marker == LIST16 {
            let Some((list, after)) = rest.split_at_checked(LIST_LEN) else {
                break;
            };
            for (n, &v) in list.iter().enumerate() {
                if n > 0 {
                    out.push(b'|');
                }
                push_decimal(&mut out, i8::from_ne_bytes([v]));
            }
            rest = after;
        } else if let Some(phrase) = phrase(marker) {
            out.extend_from_slice(phrase.as_bytes());
        }
    }
    // Substitutions start and end at ASCII bytes, so the literal bytes between them are whole
    // UTF-8 sequences of the original text: this never fails for the store's own buffers.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The phrase that `marker` stands for.
fn phrase(marker: u8) -> Option<&'static str> {
    marker
        .checked_sub(PHRASE_BASE)
        .and_then(|n| PHRASES.get(usize::from(n)).copied())
}

/// The length of `decode(packed)`, for its one allocation.
fn decoded_len(packed: &[u8]) -> usize {
    let mut len = 0;
    let mut i = 0;
    while i < packed.len() {
        let b = packed[i];
        i += 1;
        len += if b == LIST16 {
            let list = packed.get(i..i + LIST_LEN).unwrap_or_default();
            i += LIST_LEN;
            list.iter()
                .map(|&v| {
                    let v = i8::from_ne_bytes([v]);
                    usize::from(v < 0) + decimal_digits(v.unsigned_abs())
                })
                .sum::<usize>()
                + LIST_LEN
                - 1
        } else {
            phrase(b).map_or(1, str::len)
        };
    }
    len
}

fn decimal_digits(v: u8) -> usize {
    match v {
        0..=9 => 1,
        10..=99 => 2,
        _ => 3,
    }
}

/// Appends `v` as `i8`'s `Display` renders it, without a `String` per value.
fn push_decimal(out: &mut Vec<u8>, v: i8) {
    if v < 0 {
        out.push(b'-');
    }
    let abs = v.unsigned_abs();
    if abs >= 100 {
        out.push(b'0' + abs / 100);
    }
    if abs >= 10 {
        out.push(b'0' + abs / 10 % 10);
    }
    out.push(b'0' + abs % 10);
}

/// A few field/value pairs (a small Redis hash) in one allocation: per pair the field's and
/// the value's packed length as a LEB128 varint, each followed by its bytes.
///
/// One buffer of exactly its size replaces a vector of pairs and two allocations per pair:
/// a route hash of one client type is one 50-byte block. A change rebuilds the buffer, which
/// is cheap for the few fields this is used for (`cache::FEW_FIELDS`).
#[derive(Debug, Default)]
pub(crate) struct PackedPairs(Box<[u8]>);

impl PackedPairs {
    /// The pairs, in insertion order, as packed buffers.
    fn pairs(&self) -> Pairs<'_> {
        Pairs { rest: &self.0 }
    }

    /// The number of pairs.
    pub(crate) fn len(&self) -> usize {
        self.pairs().count()
    }

    /// Whether there are no pairs.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `field` is present (compared packed, nothing decoded).
    pub(crate) fn contains(&self, field: &str) -> bool {
        let field = Packed::new(field);
        self.pairs().any(|(f, _)| *f == *field.0)
    }

    /// The value of `field`.
    pub(crate) fn get(&self, field: &str) -> Option<String> {
        let field = Packed::new(field);
        self.pairs()
            .find(|(f, _)| **f == *field.0)
            .map(|(_, v)| decode(v))
    }

    /// Sets `field` to `value`, replacing the value in place or appending the pair.
    pub(crate) fn insert(&mut self, field: &str, value: &str) {
        let field = Packed::new(field);
        let value = Packed::new(value);
        let mut out = Vec::with_capacity(self.0.len() + field.0.len() + value.0.len() + 4);
        let mut replaced = false;
        for (f, v) in self.pairs() {
            let v = if f == &*field.0 {
                replaced = true;
                &*value.0
            } else {
                v
            };
            push_pair(&mut out, f, v);
        }
        if !replaced {
            push_pair(&mut out, &field.0, &value.0);
        }
        self.0 = out.into_boxed_slice();
    }

    /// Removes `field`, if present.
    pub(crate) fn remove(&mut self, field: &str) {
        let field = Packed::new(field);
        let mut out = Vec::with_capacity(self.0.len());
        for (f, v) in self.pairs() {
            if f != &*field.0 {
                push_pair(&mut out, f, v);
            }
        }
        self.0 = out.into_boxed_slice();
    }

    /// Every pair as text.
    pub(crate) fn to_text(&self) -> impl Iterator<Item = (String, String)> + '_ {
        self.pairs().map(|(f, v)| (decode(f), decode(v)))
    }
}

fn push_pair(out: &mut Vec<u8>, field: &[u8], value: &[u8]) {
    for part in [field, value] {
        push_varint(out, part.len());
        out.extend_from_slice(part);
    }
}

fn push_varint(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push(u8::try_from(n & 0x7F).unwrap_or(0) | 0x80);
        n >>= 7;
    }
    out.push(u8::try_from(n).unwrap_or(0));
}

/// The pairs of a [`PackedPairs`] buffer; ends early on a malformed buffer (never written).
struct Pairs<'a> {
    rest: &'a [u8],
}

impl<'a> Pairs<'a> {
    fn part(&mut self) -> Option<&'a [u8]> {
        let mut len = 0usize;
        let mut shift = 0u32;
        loop {
            let (&b, rest) = self.rest.split_first()?;
            self.rest = rest;
            len |= usize::from(b & 0x7F).checked_shl(shift)?;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        let (part, rest) = self.rest.split_at_checked(len)?;
        self.rest = rest;
        Some(part)
    }
}

impl<'a> Iterator for Pairs<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let field = self.part()?;
        let value = self.part()?;
        Some((field, value))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SESSION: &str = "android,8.0,2.0,dev-1,7|-14|5|0|127|-128|1|2|3|4|5|6|7|8|9|-1,\
                           0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|10";
    const ROUTE: &str = r#"{"port":3001,"host":"10.0.0.5","deviceId":"dev-1","osName":"android","clientVersion":"2.0","connId":"a1b2c3d4"}"#;

    #[test]
    fn mpush_values_round_trip_and_shrink() {
        for (text, at_most) in [(SESSION, 21 + 2 + 2 * 17), (ROUTE, 50)] {
            let packed = Packed::new(text);
            assert_eq!(packed.text(), text);
            assert!(
                packed.0.len() <= at_most,
                "{text}: {} bytes packed",
                packed.0.len()
            );
        }
    }

    /// Text that only looks like a byte list stays text, and still comes back exactly.
    #[test]
    fn non_canonical_lists_are_kept_as_text() {
        let base = "1|2|3|4|5|6|7|8|9|10|11|12|13|14|15";
        for field in [
            format!("{base}|+1"),
            format!("{base}|01"),
            format!("{base}|-0"),
            format!("{base}|128"),
            format!("{base}|-129"),
            format!("{base}|1|2"),
            base.to_string(),
            format!("{base}|"),
            format!("{base}| 1"),
        ] {
            let text = format!("a,{field},b");
            let packed = Packed::new(&text);
            assert!(!packed.0.contains(&LIST16), "{text}");
            assert_eq!(packed.text(), text);
        }
        let list = format!("{base}|-16");
        assert!(Packed::new(&list).0.contains(&LIST16));
        // Only whole comma-separated fields are lists.
        let inside = format!("x{list}");
        assert!(!Packed::new(&inside).0.contains(&LIST16));
        assert_eq!(Packed::new(&inside).text(), inside);
    }

    #[test]
    fn decimals_render_as_display() {
        for v in i8::MIN..=i8::MAX {
            let mut out = Vec::new();
            push_decimal(&mut out, v);
            assert_eq!(out, v.to_string().into_bytes());
        }
    }

    /// `encode_into` looks for a phrase only at these bytes.
    #[test]
    fn phrases_start_with_a_searched_byte() {
        assert!(PHRASES.iter().all(|p| p.starts_with(['{', ',', '"'])));
    }

    #[test]
    fn pairs_insert_replace_remove() {
        let mut pairs = PackedPairs::default();
        assert!(pairs.is_empty());
        pairs.insert("1", ROUTE);
        pairs.insert("2", "x");
        pairs.insert("1", "y");
        assert_eq!(pairs.len(), 2);
        assert_eq!(pairs.get("1").as_deref(), Some("y"));
        assert_eq!(pairs.get("2").as_deref(), Some("x"));
        assert_eq!(pairs.get("3"), None);
        let long = "v".repeat(300);
        pairs.insert("3", &long);
        assert_eq!(pairs.get("3"), Some(long));
        pairs.remove("1");
        pairs.remove("absent");
        let all: Vec<_> = pairs.to_text().collect();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0], ("2".to_string(), "x".to_string()));
        pairs.remove("2");
        pairs.remove("3");
        assert!(pairs.is_empty());
    }

    /// Pieces that exercise every substitution and its edges.
    fn piece() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(",".to_string()),
            Just("|".to_string()),
            Just("-".to_string()),
            Just("0".to_string()),
            Just("é".to_string()),
            Just("\u{1F600}".to_string()),
            proptest::sample::select(PHRASES.to_vec()).prop_map(str::to_string),
            proptest::collection::vec(any::<i8>(), 14..=17)
                .prop_map(|v| { v.iter().map(i8::to_string).collect::<Vec<_>>().join("|") }),
            "[ -~]{0,6}",
            any::<String>(),
        ]
    }

    proptest! {
        #[test]
        fn every_string_round_trips(parts in proptest::collection::vec(piece(), 0..12)) {
            let text = parts.concat();
            let packed = Packed::new(&text);
            prop_assert_eq!(decoded_len(&packed.0), text.len());
            prop_assert_eq!(packed.text(), text.clone());
            // Deterministic and injective: equal texts, equal encodings, and only those.
            prop_assert_eq!(&Packed::new(&text), &packed);
            let longer = format!("{text}x");
            prop_assert_ne!(&Packed::new(&longer), &packed);
        }

        #[test]
        fn pairs_behave_as_a_map(ops in proptest::collection::vec((0u8..4, piece(), any::<bool>()), 0..20)) {
            let mut pairs = PackedPairs::default();
            let mut model = std::collections::BTreeMap::new();
            for (field, value, insert) in ops {
                let field = format!("{field}");
                if insert {
                    pairs.insert(&field, &value);
                    model.insert(field, value);
                } else {
                    pairs.remove(&field);
                    model.remove(&field);
                }
                prop_assert_eq!(pairs.len(), model.len());
            }
            for (field, value) in &model {
                let got = pairs.get(field);
                prop_assert_eq!(got.as_ref(), Some(value));
            }
            let all: std::collections::BTreeMap<_, _> = pairs.to_text().collect();
            prop_assert_eq!(all, model);
        }
    }
}
