//! Just enough protobuf to read the two messages the validators look into, a libp2p `PublicKey`
//! (for its key type) and an `IpnsEntry`, and to write the latter. A reader never panics and never
//! reads past its buffer.

/// Longest varint protobuf allows: ten bytes carry 64 bits.
const MAX_VARINT_LEN: usize = 10;

/// Wire type of varint fields.
const WIRE_VARINT: u64 = 0;
/// Wire type of 64-bit fixed fields.
const WIRE_FIXED64: u64 = 1;
/// Wire type of length-delimited fields (bytes, strings, messages).
const WIRE_LEN: u64 = 2;
/// Wire type of 32-bit fixed fields.
const WIRE_FIXED32: u64 = 5;
/// Bits of a field's key below its number: the wire type.
const WIRE_TYPE_BITS: u32 = 3;
/// The payload bits of a varint byte; the high bit says another byte follows.
const VARINT_PAYLOAD: u64 = 0x7f;
/// See [`VARINT_PAYLOAD`].
const VARINT_MORE: u8 = 0x80;

/// Why a protobuf message did not parse.
pub(crate) type ProtoError = &'static str;

/// One field's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Value<'a> {
    /// Wire type 0.
    Varint(u64),
    /// Wire type 2.
    Bytes(&'a [u8]),
    /// Wire types 1 and 5 (fixed 64 and 32 bits): skipped, no field read here has them.
    Fixed,
}

/// Walks the fields of one message, in order.
pub(crate) struct Fields<'a> {
    buf: &'a [u8],
}

impl<'a> Fields<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    fn varint(&mut self) -> Result<u64, ProtoError> {
        let mut v = 0u64;
        for i in 0..MAX_VARINT_LEN {
            let (&b, rest) = self.buf.split_first().ok_or("truncated varint")?;
            self.buf = rest;
            let bits = u64::from(b) & VARINT_PAYLOAD;
            // The tenth byte may only carry the 64th bit.
            if i == MAX_VARINT_LEN - 1 && bits > 1 {
                return Err("varint overflows 64 bits");
            }
            v |= bits << (7 * i);
            if b & VARINT_MORE == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than ten bytes")
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], ProtoError> {
        let n = usize::try_from(n).map_err(|_| "length does not fit in memory")?;
        if n > self.buf.len() {
            return Err("field runs past the end of the message");
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// The next field as (number, payload), `Ok(None)` at the end of the message.
    pub(crate) fn next_field(&mut self) -> Result<Option<(u64, Value<'a>)>, ProtoError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let number = tag >> WIRE_TYPE_BITS;
        if number == 0 {
            return Err("field number 0");
        }
        let value = match tag & ((1 << WIRE_TYPE_BITS) - 1) {
            WIRE_VARINT => Value::Varint(self.varint()?),
            WIRE_FIXED64 => {
                self.take(8)?;
                Value::Fixed
            }
            WIRE_LEN => {
                let len = self.varint()?;
                Value::Bytes(self.take(len)?)
            }
            WIRE_FIXED32 => {
                self.take(4)?;
                Value::Fixed
            }
            _ => return Err("unsupported wire type (groups are not used)"),
        };
        Ok(Some((number, value)))
    }
}

/// Appends `v` as a varint, in its shortest form.
pub(crate) fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    while v > VARINT_PAYLOAD {
        out.push((v & VARINT_PAYLOAD) as u8 | VARINT_MORE);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends a length-delimited field `number` holding `b`.
pub(crate) fn write_bytes_field(out: &mut Vec<u8>, number: u64, b: &[u8]) {
    write_varint(out, (number << WIRE_TYPE_BITS) | WIRE_LEN);
    write_varint(out, u64::try_from(b.len()).unwrap_or(u64::MAX));
    out.extend_from_slice(b);
}

/// Appends a varint field `number` holding `v`.
pub(crate) fn write_uint_field(out: &mut Vec<u8>, number: u64, v: u64) {
    write_varint(out, (number << WIRE_TYPE_BITS) | WIRE_VARINT);
    write_varint(out, v);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(buf: &[u8]) -> Result<Vec<(u64, Value<'_>)>, ProtoError> {
        let mut fields = Fields::new(buf);
        let mut out = Vec::new();
        while let Some(f) = fields.next_field()? {
            out.push(f);
        }
        Ok(out)
    }

    #[test]
    fn reads_every_wire_type_it_knows() {
        // 1: varint 300; 2: bytes "ab"; 3: fixed64; 4: fixed32.
        let buf = [
            0x08, 0xac, 0x02, 0x12, 0x02, b'a', b'b', 0x19, 1, 2, 3, 4, 5, 6, 7, 8, 0x25, 1, 2, 3,
            4,
        ];
        assert_eq!(
            all(&buf),
            Ok(vec![
                (1, Value::Varint(300)),
                (2, Value::Bytes(b"ab")),
                (3, Value::Fixed),
                (4, Value::Fixed),
            ])
        );
        assert_eq!(all(&[]), Ok(vec![]));
    }

    #[test]
    fn malformed_messages_are_errors() {
        for bad in [
            &[0x08][..],         // varint missing
            &[0x08, 0x80],       // varint truncated
            &[0x12, 0x05, b'a'], // bytes past the end
            &[0x19, 1, 2],       // fixed64 truncated
            &[0x0b],             // start group
            &[0x0f],             // wire type 7
            &[0x00, 0x01],       // field number 0
            &[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
            ], // > 64 bits
            &[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x81, 0x00,
            ], // 11 bytes
        ] {
            assert!(all(bad).is_err(), "{bad:02x?}");
        }
        // The largest varint is fine.
        let max = [
            0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ];
        assert_eq!(all(&max), Ok(vec![(1, Value::Varint(u64::MAX))]));
    }

    #[test]
    fn writes_what_it_reads() {
        for (v, len) in [
            (0, 1),
            (0x7f, 1),
            (0x80, 2),
            (300, 2),
            (0x3fff, 2),
            (0x4000, 3),
            (u64::MAX, MAX_VARINT_LEN),
        ] {
            let mut out = Vec::new();
            write_varint(&mut out, v);
            assert_eq!(out.len(), len, "{v}");
        }
        let mut buf = Vec::new();
        write_uint_field(&mut buf, 1, 300);
        write_bytes_field(&mut buf, 2, b"ab");
        write_uint_field(&mut buf, 15, u64::MAX);
        write_bytes_field(&mut buf, 16, &[]);
        assert_eq!(&buf[..7], &[0x08, 0xac, 0x02, 0x12, 0x02, b'a', b'b']);
        assert_eq!(
            all(&buf),
            Ok(vec![
                (1, Value::Varint(300)),
                (2, Value::Bytes(b"ab")),
                (15, Value::Varint(u64::MAX)),
                (16, Value::Bytes(b"")),
            ])
        );
    }
}
