//! DAG-CBOR for an IPNS record's `data` field: a reader for the map, and the few writers that
//! building one takes.
//!
//! It accepts the item kinds DAG-CBOR allows (definite lengths only, text map keys, no duplicate
//! keys, tag 42 only, `false`/`true`/`null` and finite 64-bit floats as simple values) and rejects
//! the rest. It does not insist on DAG-CBOR's canonical form (shortest integers, sorted keys): the
//! signature covers the exact bytes, so a record that spells an integer long means the same thing
//! and cannot be altered.
//!
//! The writers do produce the canonical form: every head in its shortest spelling, map keys in
//! DAG-CBOR's order ([`key_order`]).

use std::cmp::Ordering;
use std::collections::BTreeSet;

/// Why the data did not parse.
pub(crate) type CborError = &'static str;

/// DAG-CBOR's only tag: a CID.
const TAG_CID: u64 = 42;

const MAJOR_UINT: u8 = 0;
const MAJOR_NEGATIVE: u8 = 1;
const MAJOR_BYTES: u8 = 2;
const MAJOR_TEXT: u8 = 3;
const MAJOR_ARRAY: u8 = 4;
const MAJOR_MAP: u8 = 5;
const MAJOR_TAG: u8 = 6;
const MAJOR_SIMPLE: u8 = 7;

const SIMPLE_FALSE: u8 = 20;
const SIMPLE_TRUE: u8 = 21;
const SIMPLE_NULL: u8 = 22;
const FLOAT64: u8 = 27;

/// What an entry of the top-level map holds, as far as the IPNS fields need to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scalar<'a> {
    Uint(u64),
    Bytes(&'a [u8]),
    /// Anything else (negative integers, text, arrays, maps, CIDs, simple values, floats):
    /// well-formed, and not what any IPNS field holds.
    Other,
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, CborError> {
        let (&b, rest) = self.buf.split_first().ok_or("truncated item")?;
        self.buf = rest;
        Ok(b)
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], CborError> {
        let n = usize::try_from(n).map_err(|_| "length does not fit in memory")?;
        if n > self.buf.len() {
            return Err("item runs past the end of the data");
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// An item's head: (major type, additional information, argument).
    fn head(&mut self) -> Result<(u8, u8, u64), CborError> {
        let initial = self.byte()?;
        let (major, info) = (initial >> 5, initial & 0x1f);
        let arg = match info {
            0..=23 => u64::from(info),
            24 => u64::from(self.byte()?),
            25..=27 => {
                let width = 1u64 << (info - 24);
                self.take(width)?
                    .iter()
                    .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
            }
            31 => return Err("indefinite length (DAG-CBOR forbids it)"),
            _ => return Err("reserved additional information"),
        };
        Ok((major, info, arg))
    }

    /// A count of items that follow, each at least `min_bytes` long: never more than the bytes
    /// left.
    fn count(&self, n: u64, min_bytes: u64) -> Result<u64, CborError> {
        let left = u64::try_from(self.buf.len()).unwrap_or(u64::MAX);
        if n.saturating_mul(min_bytes) > left {
            return Err("count exceeds the bytes left");
        }
        Ok(n)
    }

    fn text(&mut self, len: u64) -> Result<&'a str, CborError> {
        std::str::from_utf8(self.take(len)?).map_err(|_| "text is not UTF-8")
    }

    /// A map key: DAG-CBOR allows text only.
    fn key(&mut self) -> Result<&'a str, CborError> {
        match self.head()? {
            (MAJOR_TEXT, _, len) => self.text(len),
            _ => Err("map key is not text"),
        }
    }

    /// One whole item, `depth` being the nesting of the container it sits in.
    fn item(&mut self, depth: usize, max_depth: usize) -> Result<Scalar<'a>, CborError> {
        let (major, info, arg) = self.head()?;
        match major {
            MAJOR_UINT => Ok(Scalar::Uint(arg)),
            MAJOR_NEGATIVE => Ok(Scalar::Other),
            MAJOR_BYTES => Ok(Scalar::Bytes(self.take(arg)?)),
            MAJOR_TEXT => self.text(arg).map(|_| Scalar::Other),
            MAJOR_ARRAY => {
                let inner = nested(depth, max_depth)?;
                for _ in 0..self.count(arg, 1)? {
                    self.item(inner, max_depth)?;
                }
                Ok(Scalar::Other)
            }
            MAJOR_MAP => {
                let inner = nested(depth, max_depth)?;
                let n = self.count(arg, 2)?;
                self.entries(n, inner, max_depth, |_, _| ())?;
                Ok(Scalar::Other)
            }
            MAJOR_TAG if arg == TAG_CID => match self.head()? {
                (MAJOR_BYTES, _, len) => self.take(len).map(|_| Scalar::Other),
                _ => Err("tag 42 on something other than bytes"),
            },
            MAJOR_TAG => Err("tag other than 42 (DAG-CBOR forbids it)"),
            MAJOR_SIMPLE => match info {
                SIMPLE_FALSE | SIMPLE_TRUE | SIMPLE_NULL => Ok(Scalar::Other),
                FLOAT64 if f64::from_bits(arg).is_finite() => Ok(Scalar::Other),
                FLOAT64 => Err("NaN or infinity (DAG-CBOR forbids them)"),
                _ => Err("simple value or float width DAG-CBOR forbids"),
            },
            _ => Err("unknown major type"),
        }
    }

    /// `n` map entries at nesting `depth`, handing each to `visit`; a key seen twice is an error.
    fn entries(
        &mut self,
        n: u64,
        depth: usize,
        max_depth: usize,
        mut visit: impl FnMut(&'a str, Scalar<'a>),
    ) -> Result<(), CborError> {
        let mut seen = BTreeSet::new();
        for _ in 0..n {
            let key = self.key()?;
            if !seen.insert(key) {
                return Err("duplicate map key");
            }
            let value = self.item(depth, max_depth)?;
            visit(key, value);
        }
        Ok(())
    }
}

/// The nesting inside a container at `depth`, if that stays within `max_depth`.
fn nested(depth: usize, max_depth: usize) -> Result<usize, CborError> {
    let inner = depth.saturating_add(1);
    if inner > max_depth {
        return Err("nested too deeply");
    }
    Ok(inner)
}

/// Decodes `buf` as one DAG-CBOR map with nothing after it, returning its entries in order.
/// Containers may nest at most `max_depth` deep, the top-level map counting as one.
pub(crate) fn decode_map(
    buf: &[u8],
    max_depth: usize,
) -> Result<Vec<(&str, Scalar<'_>)>, CborError> {
    let mut reader = Reader { buf };
    let (major, _, arg) = reader.head()?;
    if major != MAJOR_MAP {
        return Err("data is not a map");
    }
    let depth = nested(0, max_depth)?;
    let n = reader.count(arg, 2)?;
    let mut out = Vec::new();
    reader.entries(n, depth, max_depth, |k, v| out.push((k, v)))?;
    if !reader.buf.is_empty() {
        return Err("bytes after the map");
    }
    Ok(out)
}

// ---- writing -----------------------------------------------------------------------------------

/// Additional information values up to this one are the argument itself, in the initial byte.
const MAX_INLINE_ARG: u64 = 23;
/// Additional information of a head whose argument follows in 1, 2, 4 or 8 bytes.
const INFO_ARG_1: u8 = 24;
/// See [`INFO_ARG_1`].
const INFO_ARG_2: u8 = 25;
/// See [`INFO_ARG_1`].
const INFO_ARG_4: u8 = 26;
/// See [`INFO_ARG_1`].
const INFO_ARG_8: u8 = 27;

/// Appends a head of `major` type with argument `arg`, in the shortest form (as DAG-CBOR wants).
pub(crate) fn write_head(out: &mut Vec<u8>, major: u8, arg: u64) {
    let (info, width) = match arg {
        0..=MAX_INLINE_ARG => (arg as u8, 0),
        24..=0xff => (INFO_ARG_1, 1),
        0x100..=0xffff => (INFO_ARG_2, 2),
        0x1_0000..=0xffff_ffff => (INFO_ARG_4, 4),
        _ => (INFO_ARG_8, 8),
    };
    out.push((major << 5) | info);
    let bytes = arg.to_be_bytes();
    out.extend_from_slice(&bytes[bytes.len() - width..]);
}

/// A length as a CBOR argument (a `usize` always fits in 64 bits where this builds).
fn length(len: usize) -> u64 {
    u64::try_from(len).unwrap_or(u64::MAX)
}

/// An unsigned integer item.
pub(crate) fn encode_uint(v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    write_head(&mut out, MAJOR_UINT, v);
    out
}

/// A byte string item.
pub(crate) fn encode_bytes(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len() + 9);
    write_head(&mut out, MAJOR_BYTES, length(b.len()));
    out.extend_from_slice(b);
    out
}

/// A text string item.
pub(crate) fn encode_text(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() + 9);
    write_head(&mut out, MAJOR_TEXT, length(s.len()));
    out.extend_from_slice(s.as_bytes());
    out
}

/// DAG-CBOR's order of map keys (RFC 7049's canonical order): the shorter key first, keys of one
/// length bytewise. For text keys this is the order of their encoded bytes.
pub(crate) fn key_order(a: &str, b: &str) -> Ordering {
    a.len()
        .cmp(&b.len())
        .then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

/// A map of text keys to encoded items, the entries sorted in [`key_order`] (a stable sort).
/// Entries are otherwise written as given: the caller's keys must be distinct for the map to be
/// DAG-CBOR (tests rely on being able to write a duplicate).
pub(crate) fn encode_map(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut sorted: Vec<&(&str, Vec<u8>)> = entries.iter().collect();
    sorted.sort_by(|a, b| key_order(a.0, b.0));
    let mut out = Vec::new();
    write_head(&mut out, MAJOR_MAP, length(entries.len()));
    for (k, v) in sorted {
        out.extend(encode_text(k));
        out.extend_from_slice(v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEPTH: usize = 4;

    fn decode(hex_data: &str) -> Result<Vec<(String, Scalar<'static>)>, CborError> {
        let bytes: &'static [u8] = Vec::leak(hex::decode(hex_data).expect("test hex"));
        decode_map(bytes, DEPTH).map(|v| v.into_iter().map(|(k, s)| (k.to_owned(), s)).collect())
    }

    #[test]
    fn reads_the_fields_it_needs_and_skips_the_rest() {
        // {"a": 1, "b": h'0102', "c": [-1, "x", {"d": null}], "e": 42(h'00'), "f": 1.5, "g": true}
        let map = decode(concat!(
            "a6",
            "616101",
            "6162420102",
            "616383206178a16164f6",
            "6165d82a4100",
            "6166fb3ff8000000000000",
            "6167f5",
        ))
        .expect("valid map");
        assert_eq!(
            map,
            vec![
                ("a".to_owned(), Scalar::Uint(1)),
                ("b".to_owned(), Scalar::Bytes(&[1, 2])),
                ("c".to_owned(), Scalar::Other),
                ("e".to_owned(), Scalar::Other),
                ("f".to_owned(), Scalar::Other),
                ("g".to_owned(), Scalar::Other),
            ]
        );
        // Long spellings of integers and lengths are accepted.
        assert_eq!(
            decode("a1616119000a"),
            Ok(vec![("a".to_owned(), Scalar::Uint(10))])
        );
        assert_eq!(
            decode("a161611b00000045d964b800"),
            Ok(vec![("a".to_owned(), Scalar::Uint(300_000_000_000))])
        );
        assert_eq!(decode("a0"), Ok(vec![]));
    }

    #[test]
    fn refuses_what_dag_cbor_forbids_or_what_is_broken() {
        for (why, bad) in [
            ("not a map", "8101"),
            ("empty", ""),
            ("indefinite map", "bf616101ff"),
            ("indefinite bytes", "a161615f4101ff"),
            ("integer key", "a10101"),
            ("duplicate key", "a2616101616102"),
            ("duplicate key in a nested map", "a16161a2616201616202"),
            ("trailing bytes", "a161610100"),
            ("truncated value", "a1616142"),
            ("truncated head", "a161611a0000"),
            ("count past the end", "a5616101"),
            ("reserved info", "a161611c"),
            ("tag other than 42", "a16161c100"),
            ("tag 42 on text", "a16161d82a6130"),
            ("undefined", "a16161f7"),
            ("float32", "a16161fa3fc00000"),
            ("NaN", "a16161fb7ff8000000000000"),
            ("invalid UTF-8 key", "a161ff01"),
            ("invalid UTF-8 text value", "a1616161ff"),
            ("too deep: the map, then four arrays", "a161618181818100"),
        ] {
            assert!(decode(bad).is_err(), "{why}: {bad}");
        }
        // Exactly at the nesting limit is fine: the map, then three arrays.
        assert!(decode("a1616181818100").is_ok());
    }

    #[test]
    fn heads_are_written_in_their_shortest_form_and_read_back() {
        for (arg, hex_head) in [
            (0, "00"),
            (23, "17"),
            (24, "1818"),
            (0xff, "18ff"),
            (0x100, "190100"),
            (0xffff, "19ffff"),
            (0x1_0000, "1a00010000"),
            (0xffff_ffff, "1affffffff"),
            (0x1_0000_0000, "1b0000000100000000"),
            (u64::MAX, "1bffffffffffffffff"),
        ] {
            assert_eq!(hex::encode(encode_uint(arg)), hex_head, "{arg}");
            let mut map = vec![0xa1];
            map.extend(encode_text("a"));
            map.extend(encode_uint(arg));
            assert_eq!(
                decode_map(&map, DEPTH),
                Ok(vec![("a", Scalar::Uint(arg))]),
                "{arg}"
            );
        }
        assert_eq!(hex::encode(encode_bytes(b"\x01\x02")), "420102");
        assert_eq!(hex::encode(encode_text("TTL")), "6354544c");
        let long = vec![7u8; 300];
        let encoded = encode_bytes(&long);
        assert_eq!(&encoded[..3], &[0x59, 0x01, 0x2c]);
        assert_eq!(&encoded[3..], &long[..]);
    }

    #[test]
    fn map_keys_are_written_in_dag_cbor_order() {
        // Shorter first, then bytewise (upper-case 'B' is 0x42, before 'a').
        let map = encode_map(&[
            ("ab", encode_uint(1)),
            ("b", encode_uint(2)),
            ("B0", encode_uint(3)),
            ("aa", encode_uint(4)),
        ]);
        let keys: Vec<&str> = decode_map(&map, DEPTH)
            .expect("a valid map")
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["b", "B0", "aa", "ab"]);
        assert_eq!(key_order("TTL", "Value"), Ordering::Less);
        assert_eq!(key_order("Sequence", "Validity"), Ordering::Less);
        assert_eq!(key_order("Validity", "ValidityType"), Ordering::Less);
        assert_eq!(key_order("a", "a"), Ordering::Equal);
        assert_eq!(hex::encode(encode_map(&[])), "a0");
    }
}
