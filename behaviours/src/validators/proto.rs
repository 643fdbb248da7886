//! Just enough protobuf to read the two messages the validators look into: a libp2p `PublicKey`
//! (for its key type) and an `IpnsEntry`. A reader never panics and never reads past its buffer.

/// Longest varint protobuf allows: ten bytes carry 64 bits.
const MAX_VARINT_LEN: usize = 10;

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
            let bits = u64::from(b & 0x7f);
            // The tenth byte may only carry the 64th bit.
            if i == MAX_VARINT_LEN - 1 && bits > 1 {
                return Err("varint overflows 64 bits");
            }
            v |= bits << (7 * i);
            if b & 0x80 == 0 {
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
        let number = tag >> 3;
        if number == 0 {
            return Err("field number 0");
        }
        let value = match tag & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Fixed
            }
            2 => {
                let len = self.varint()?;
                Value::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Value::Fixed
            }
            _ => return Err("unsupported wire type (groups are not used)"),
        };
        Ok(Some((number, value)))
    }
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
}
