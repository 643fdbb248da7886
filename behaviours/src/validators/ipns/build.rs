//! Building IPNS records: what a node publishing a name signs.
//!
//! [`build_record`] makes the record Go's boxo (`ipns.NewRecord`, as Kubo publishes) and js-ipns
//! make by default, a V1+V2 `IpnsEntry` following the specification's "Record Creation with Legacy
//! SignatureV1":
//!
//! - `data`: the DAG-CBOR map of `Value`, `Validity`, `ValidityType` (0, EOL), `Sequence` and `TTL`
//!   (nanoseconds), keys in DAG-CBOR's order (`TTL`, `Value`, `Sequence`, `Validity`,
//!   `ValidityType`: shorter first, then bytewise), every head in its shortest form;
//! - `signatureV2`: the signature over [`SIGNATURE_V2_PREFIX`] followed by `data`;
//! - `pubKey`: the protobuf public key, only when the name cannot inline it (RSA);
//! - the legacy V1 copies `value`, `validityType`, `validity`, `sequence`, `ttl`, and
//!   `signatureV1` over `value`, then `validity`, then the validity type's name ([`SIGNATURE_V1_EOL`]),
//!   which is what boxo (`fmt.Sprint` of the protobuf enum) and js-ipns (the enum's string) sign.
//!   Nothing verifies V1 signatures any more; they let software older than 2021 resolve the name.
//!
//! The validity is written as Go's `time.RFC3339Nano` writes it in UTC: nanoseconds with trailing
//! zeros trimmed (`2123-08-14T12:17:03.694052Z`), no fraction for a whole second.
//!
//! Fields are written in field-number order, as Go's protobuf does; with Ed25519's deterministic
//! signatures the same inputs give the same bytes.

use std::time::{Duration, SystemTime};

use libp2p::identity::{Keypair, SigningError};
use time::OffsetDateTime;

use super::super::proto::{write_bytes_field, write_uint_field};
use super::super::{MAX_PUBLIC_KEY_SIZE, MULTIHASH_IDENTITY, cbor};
use super::{
    Data, Entry, FIELD_SEQUENCE, FIELD_TTL, FIELD_VALIDITY, FIELD_VALIDITY_TYPE, FIELD_VALUE,
    MAX_RECORD_SIZE, SIGNATURE_V2_PREFIX, VALIDITY_TYPE_EOL, number, routing_key,
};

/// Highest sequence a record is built with: Go reads `Sequence` as an `int64`, so a larger one
/// would not round-trip through boxo.
pub const MAX_SEQUENCE: u64 = i64::MAX as u64;

/// Longest TTL a record is built with: Go reads `TTL` as a `time.Duration` (`int64` nanoseconds,
/// about 292 years).
pub const MAX_TTL: Duration = Duration::from_nanos(i64::MAX as u64);

/// First year of an end of life: RFC 3339 writes years with four digits.
pub const MIN_VALIDITY_YEAR: i32 = 0;
/// Last year of an end of life, see [`MIN_VALIDITY_YEAR`].
pub const MAX_VALIDITY_YEAR: i32 = 9999;

/// Largest value [`build_record`] tries to sign: the record holds the value twice (its V1 copy
/// and `data[Value]`), so a larger one can never fit in [`MAX_RECORD_SIZE`]. Smaller values can
/// still make a record too large; [`BuildError::RecordTooLarge`] says so.
pub const MAX_VALUE_SIZE: usize = MAX_RECORD_SIZE / 2;

/// What `signatureV1` signs after `value` and `validity` for validity type EOL: the name of the
/// protobuf enum value.
pub const SIGNATURE_V1_EOL: &str = "EOL";

/// How long a record should stay valid when the publisher does not say: the Amino DHT's record
/// window (records live at most 48 hours there), as the specification and boxo suggest.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(48 * 60 * 60);

/// How long resolvers may cache a record when the publisher does not say: the specification's
/// suggested 5 minutes.
pub const DEFAULT_TTL: Duration = Duration::from_secs(5 * 60);

/// Why a record could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The key's protobuf public key is larger than validators accept.
    #[error("the public key is {size} bytes where at most {max} are accepted")]
    PublicKeyTooLarge {
        /// Its size.
        size: usize,
        /// [`MAX_PUBLIC_KEY_SIZE`].
        max: usize,
    },
    /// The value cannot fit in a record (see [`MAX_VALUE_SIZE`]).
    #[error("the value is {size} bytes where at most {max} can fit in a record")]
    ValueTooLarge {
        /// Its size.
        size: usize,
        /// [`MAX_VALUE_SIZE`].
        max: usize,
    },
    /// A sequence above [`MAX_SEQUENCE`], or one with no successor.
    #[error("sequence {sequence} is above the highest one, {max}")]
    SequenceTooLarge {
        /// The sequence asked for.
        sequence: u64,
        /// [`MAX_SEQUENCE`].
        max: u64,
    },
    /// A TTL above [`MAX_TTL`].
    #[error("a TTL of {ttl:?} is above the longest one, {max:?}")]
    TtlTooLarge {
        /// The TTL asked for.
        ttl: Duration,
        /// [`MAX_TTL`].
        max: Duration,
    },
    /// An end of life outside the years RFC 3339 can write.
    #[error(
        "the end of life is outside years {} to {}",
        MIN_VALIDITY_YEAR,
        MAX_VALIDITY_YEAR
    )]
    EolOutOfRange,
    /// The key failed to sign.
    #[error("signing failed: {0}")]
    Signing(#[from] SigningError),
    /// The record came out larger than the specification's limit.
    #[error("the record is {size} bytes where at most {max} are allowed")]
    RecordTooLarge {
        /// Its size.
        size: usize,
        /// [`MAX_RECORD_SIZE`].
        max: usize,
    },
}

/// The DHT key of the name `key` publishes under: `/ipns/` and the binary multihash of its peer id.
pub fn routing_key_for(key: &Keypair) -> Vec<u8> {
    routing_key(&key.public().to_peer_id())
}

/// A signed IPNS record, as the module documentation describes: `key` says `value` (a path such as
/// `/ipfs/<cid>`) until `eol`, as version `sequence`, cacheable for `ttl`.
///
/// Nothing here reads a clock: the caller picks `eol` (typically now plus [`DEFAULT_LIFETIME`])
/// and `sequence` (see [`next_sequence`]); a record whose `eol` has passed is built but will not
/// validate.
pub fn build_record(
    key: &Keypair,
    value: &[u8],
    sequence: u64,
    eol: SystemTime,
    ttl: Duration,
) -> Result<Vec<u8>, BuildError> {
    if value.len() > MAX_VALUE_SIZE {
        return Err(BuildError::ValueTooLarge {
            size: value.len(),
            max: MAX_VALUE_SIZE,
        });
    }
    if sequence > MAX_SEQUENCE {
        return Err(BuildError::SequenceTooLarge {
            sequence,
            max: MAX_SEQUENCE,
        });
    }
    let ttl_nanos = u64::try_from(ttl.as_nanos())
        .ok()
        .filter(|_| ttl <= MAX_TTL)
        .ok_or(BuildError::TtlTooLarge { ttl, max: MAX_TTL })?;
    let validity = format_validity(eol)?;
    let pub_key = embedded_public_key(key)?;

    let fields = RecordFields {
        value,
        validity: validity.as_bytes(),
        validity_type: VALIDITY_TYPE_EOL,
        sequence,
        ttl: ttl_nanos,
    };
    let data = fields.data();
    let signature_v2 = key.sign(&signature_v2_payload(&data))?;
    let signature_v1 = key.sign(&fields.signature_v1_payload())?;

    let record = EntryFields {
        value: Some(value),
        signature_v1: Some(&signature_v1),
        validity_type: Some(fields.validity_type),
        validity: Some(fields.validity),
        sequence: Some(sequence),
        ttl: Some(ttl_nanos),
        pub_key: pub_key.as_deref(),
        signature_v2: Some(&signature_v2),
        data: Some(&data),
    }
    .encode();
    if record.len() > MAX_RECORD_SIZE {
        return Err(BuildError::RecordTooLarge {
            size: record.len(),
            max: MAX_RECORD_SIZE,
        });
    }
    Ok(record)
}

/// The sequence of a record the caller has validated (the one it holds for the name), from its
/// signed `data`; `None` if the record does not even parse. The signature is not checked here: a
/// record from elsewhere goes through [`validate`](super::validate) first, whose
/// [`IpnsRecord`](super::IpnsRecord) says the same.
pub fn sequence_of(record: &[u8]) -> Option<u64> {
    if record.len() > MAX_RECORD_SIZE {
        return None;
    }
    let entry = Entry::parse(record).ok()?;
    let (_, data) = entry.v2_parts().ok()?;
    Data::parse(data).ok().map(|d| d.sequence)
}

/// The sequence of a new record for a name whose newest record has sequence `held` (`None`: the
/// name has none, the sequence starts at 0). The network prefers the higher sequence, so this is
/// `held + 1`, unless `held` is already [`MAX_SEQUENCE`].
pub fn next_sequence(held: Option<u64>) -> Result<u64, BuildError> {
    let Some(held) = held else { return Ok(0) };
    held.checked_add(1)
        .filter(|&next| next <= MAX_SEQUENCE)
        .ok_or(BuildError::SequenceTooLarge {
            sequence: held,
            max: MAX_SEQUENCE,
        })
}

/// The public key to embed in `pubKey`: `None` when the name inlines it (an identity multihash,
/// Ed25519), the protobuf encoding otherwise (RSA).
pub(crate) fn embedded_public_key(key: &Keypair) -> Result<Option<Vec<u8>>, BuildError> {
    let public = key.public();
    if public.to_peer_id().as_ref().code() == MULTIHASH_IDENTITY {
        return Ok(None);
    }
    let encoded = public.encode_protobuf();
    if encoded.len() > MAX_PUBLIC_KEY_SIZE {
        return Err(BuildError::PublicKeyTooLarge {
            size: encoded.len(),
            max: MAX_PUBLIC_KEY_SIZE,
        });
    }
    Ok(Some(encoded))
}

/// Digits of the nanoseconds in an RFC 3339 fraction.
const FRACTION_DIGITS: usize = 9;

/// `eol` as Go's `time.RFC3339Nano` writes it in UTC (see the module documentation).
pub(crate) fn format_validity(eol: SystemTime) -> Result<String, BuildError> {
    let nanos = match eol.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => i128::try_from(after.as_nanos()).ok(),
        Err(before) => i128::try_from(before.duration().as_nanos())
            .ok()
            .map(|n| -n),
    }
    .ok_or(BuildError::EolOutOfRange)?;
    let at =
        OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|_| BuildError::EolOutOfRange)?;
    if !(MIN_VALIDITY_YEAR..=MAX_VALIDITY_YEAR).contains(&at.year()) {
        return Err(BuildError::EolOutOfRange);
    }
    let mut text = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
    );
    if at.nanosecond() != 0 {
        let fraction = format!("{:0width$}", at.nanosecond(), width = FRACTION_DIGITS);
        text.push('.');
        text.push_str(fraction.trim_end_matches('0'));
    }
    text.push('Z');
    Ok(text)
}

/// What `signatureV1` signs for a validity type after `value` and `validity`: the protobuf enum's
/// name, or the number for a type the enum does not know (as Go prints one).
fn validity_type_text(validity_type: u64) -> String {
    if validity_type == VALIDITY_TYPE_EOL {
        SIGNATURE_V1_EOL.to_owned()
    } else {
        validity_type.to_string()
    }
}

/// [`SIGNATURE_V2_PREFIX`] followed by `data`: what `signatureV2` signs.
pub(crate) fn signature_v2_payload(data: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(SIGNATURE_V2_PREFIX.len() + data.len());
    payload.extend_from_slice(SIGNATURE_V2_PREFIX);
    payload.extend_from_slice(data);
    payload
}

/// The five signed fields of a record, as written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordFields<'a> {
    pub(crate) value: &'a [u8],
    pub(crate) validity: &'a [u8],
    pub(crate) validity_type: u64,
    pub(crate) sequence: u64,
    /// Nanoseconds.
    pub(crate) ttl: u64,
}

impl RecordFields<'_> {
    /// The fields as `data` map entries: (key, encoded item).
    pub(crate) fn data_entries(&self) -> Vec<(&'static str, Vec<u8>)> {
        vec![
            (FIELD_VALUE, cbor::encode_bytes(self.value)),
            (FIELD_VALIDITY, cbor::encode_bytes(self.validity)),
            (FIELD_VALIDITY_TYPE, cbor::encode_uint(self.validity_type)),
            (FIELD_SEQUENCE, cbor::encode_uint(self.sequence)),
            (FIELD_TTL, cbor::encode_uint(self.ttl)),
        ]
    }

    /// The DAG-CBOR `data` field.
    pub(crate) fn data(&self) -> Vec<u8> {
        cbor::encode_map(&self.data_entries())
    }

    /// What `signatureV1` signs: `value`, `validity`, then the validity type's text.
    pub(crate) fn signature_v1_payload(&self) -> Vec<u8> {
        let type_text = validity_type_text(self.validity_type);
        let mut payload =
            Vec::with_capacity(self.value.len() + self.validity.len() + type_text.len());
        payload.extend_from_slice(self.value);
        payload.extend_from_slice(self.validity);
        payload.extend_from_slice(type_text.as_bytes());
        payload
    }
}

/// An `IpnsEntry` to write, field by field (`None`: absent).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct EntryFields<'a> {
    pub(crate) value: Option<&'a [u8]>,
    pub(crate) signature_v1: Option<&'a [u8]>,
    pub(crate) validity_type: Option<u64>,
    pub(crate) validity: Option<&'a [u8]>,
    pub(crate) sequence: Option<u64>,
    pub(crate) ttl: Option<u64>,
    pub(crate) pub_key: Option<&'a [u8]>,
    pub(crate) signature_v2: Option<&'a [u8]>,
    pub(crate) data: Option<&'a [u8]>,
}

impl EntryFields<'_> {
    /// The protobuf encoding, fields in number order as Go writes them.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let bytes = |out: &mut Vec<u8>, number, field: Option<&[u8]>| {
            if let Some(b) = field {
                write_bytes_field(out, number, b);
            }
        };
        let uint = |out: &mut Vec<u8>, number, field: Option<u64>| {
            if let Some(v) = field {
                write_uint_field(out, number, v);
            }
        };
        bytes(&mut out, number::VALUE, self.value);
        bytes(&mut out, number::SIGNATURE_V1, self.signature_v1);
        uint(&mut out, number::VALIDITY_TYPE, self.validity_type);
        bytes(&mut out, number::VALIDITY, self.validity);
        uint(&mut out, number::SEQUENCE, self.sequence);
        uint(&mut out, number::TTL, self.ttl);
        bytes(&mut out, number::PUB_KEY, self.pub_key);
        bytes(&mut out, number::SIGNATURE_V2, self.signature_v2);
        bytes(&mut out, number::DATA, self.data);
        out
    }
}

#[cfg(test)]
mod tests;
