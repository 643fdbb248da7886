//! `/ipns/<multihash>`: IPNS records, checked as the IPNS Record specification's "Record
//! Verification" says (specs.ipfs.tech/ipns/ipns-record).
//!
//! A record is a protobuf `IpnsEntry` of at most [`MAX_RECORD_SIZE`] bytes:
//!
//! | field | number | |
//! | --- | --- | --- |
//! | `value` | 1 | legacy V1 copy of `data[Value]` |
//! | `signatureV1` | 2 | legacy, never trusted |
//! | `validityType` | 3 | legacy V1 copy of `data[ValidityType]` |
//! | `validity` | 4 | legacy V1 copy of `data[Validity]` |
//! | `sequence` | 5 | legacy V1 copy of `data[Sequence]` |
//! | `ttl` | 6 | legacy V1 copy of `data[TTL]` |
//! | `pubKey` | 7 | the signing key, when the name cannot inline it (RSA) |
//! | `signatureV2` | 8 | signature over [`SIGNATURE_V2_PREFIX`] followed by `data` |
//! | `data` | 9 | DAG-CBOR map: `Value`, `Validity`, `ValidityType`, `Sequence`, `TTL` |
//!
//! Verification, failing on the first error: the size; the name; `signatureV2` and `data` present
//! (a V1-only record is refused); the public key, from `pubKey` (which must hash to the name) or
//! else inlined in the name's identity multihash; `data` decoded; `signatureV2` verified; the V1
//! fields compared with their signed copies; the validity type EOL and the RFC 3339 end of life
//! after `now`.
//!
//! Records are built (signed) by [`build_record`], in the V1+V2 shape Go's boxo and js-ipns publish
//! by default; [`next_sequence`] and [`sequence_of`] help a publisher number them.
//!
//! V1 fields: the specification compares all five whenever `signatureV1` or `value` is present (an
//! absent one counting as empty or zero, as Go's protobuf getters read it); here, in addition, any
//! V1 field that is present must equal its signed copy, so no unsigned field can say something the
//! signed data does not.

use std::cmp::Ordering;
use std::time::{Duration, SystemTime};

use libp2p::PeerId;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::cbor::{self, Scalar};
use super::proto::{self, Value};
use super::{MULTIHASH_IDENTITY, ValidatorError, decode_public_key, parse_name};

pub(super) mod build;
pub use build::{
    BuildError, DEFAULT_LIFETIME, DEFAULT_TTL, MAX_SEQUENCE, MAX_TTL, MAX_VALIDITY_YEAR,
    MAX_VALUE_SIZE, MIN_VALIDITY_YEAR, SIGNATURE_V1_EOL, build_record, next_sequence,
    routing_key_for, sequence_of,
};

/// Raw key prefix of the namespace.
pub const PREFIX: &[u8] = b"/ipns/";

/// Largest serialized record accepted, as the specification sets it (10 KiB, inclusive).
pub const MAX_RECORD_SIZE: usize = 10 * 1024;

/// What `signatureV2` signs: these bytes, then the raw `data` field.
pub const SIGNATURE_V2_PREFIX: &[u8] = b"ipns-signature:";

/// The one validity type: `Validity` is the record's end of life.
pub const VALIDITY_TYPE_EOL: u64 = 0;

/// Deepest nesting of containers in `data` (the map itself counts as one): room for extension
/// fields, none for a stack-hungry tower of arrays.
pub const MAX_DATA_NESTING: usize = 32;

/// Keys of the signed fields in `data`.
pub const FIELD_VALUE: &str = "Value";
/// See [`FIELD_VALUE`].
pub const FIELD_VALIDITY: &str = "Validity";
/// See [`FIELD_VALUE`].
pub const FIELD_VALIDITY_TYPE: &str = "ValidityType";
/// See [`FIELD_VALUE`].
pub const FIELD_SEQUENCE: &str = "Sequence";
/// See [`FIELD_VALUE`].
pub const FIELD_TTL: &str = "TTL";

/// Field numbers of the `IpnsEntry` protobuf (see the module documentation).
mod number {
    pub(super) const VALUE: u64 = 1;
    pub(super) const SIGNATURE_V1: u64 = 2;
    pub(super) const VALIDITY_TYPE: u64 = 3;
    pub(super) const VALIDITY: u64 = 4;
    pub(super) const SEQUENCE: u64 = 5;
    pub(super) const TTL: u64 = 6;
    pub(super) const PUB_KEY: u64 = 7;
    pub(super) const SIGNATURE_V2: u64 = 8;
    pub(super) const DATA: u64 = 9;
}

/// What a valid record says, from its signed `data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpnsRecord {
    /// The path the name points at (`/ipfs/...`, `/ipns/...`).
    pub value: Vec<u8>,
    /// The version of the record; higher is newer.
    pub sequence: u64,
    /// When the record stops being valid: no node should keep or serve it after this.
    pub eol: SystemTime,
    /// How long resolvers may cache it.
    pub ttl: Duration,
}

/// The DHT key under which `name`'s records live: `/ipns/` and its binary multihash.
pub fn routing_key(name: &PeerId) -> Vec<u8> {
    let mut key = PREFIX.to_vec();
    key.extend_from_slice(&name.to_bytes());
    key
}

/// Checks `record` under `name` (the key's bytes after [`PREFIX`]) at `now`; returns what it says.
pub fn validate(name: &[u8], record: &[u8], now: SystemTime) -> Result<IpnsRecord, ValidatorError> {
    if record.len() > MAX_RECORD_SIZE {
        return Err(ValidatorError::TooLarge {
            size: record.len(),
            max: MAX_RECORD_SIZE,
        });
    }
    let peer = parse_name(name)?;
    let entry = Entry::parse(record)?;
    let (signature, data_bytes) = entry.v2_parts()?;

    let key = match entry.pub_key.filter(|k| !k.is_empty()) {
        Some(bytes) => {
            let key = decode_public_key(bytes)?;
            if key.to_peer_id() != peer {
                return Err(ValidatorError::PublicKeyMismatch);
            }
            key
        }
        None => {
            let multihash = peer.as_ref();
            if multihash.code() != MULTIHASH_IDENTITY {
                return Err(ValidatorError::PublicKeyNotFound);
            }
            decode_public_key(multihash.digest())?
        }
    };

    let data = Data::parse(data_bytes)?;

    if !key.verify(&build::signature_v2_payload(data_bytes), signature) {
        return Err(ValidatorError::BadSignature);
    }

    entry.check_v1(&data)?;

    let eol = data.eol()?;
    if eol <= now {
        return Err(ValidatorError::Expired);
    }
    Ok(IpnsRecord {
        value: data.value.to_vec(),
        sequence: data.sequence,
        eol,
        ttl: Duration::from_nanos(data.ttl),
    })
}

/// Which of two records under one name is the better, both having passed [`validate`]: higher
/// sequence, then later end of life, then the greater bytes (Go's boxo breaks ties the same way).
/// `Greater` means `a`. A record that does not even parse loses to one that does.
pub fn select(a: &[u8], b: &[u8]) -> Ordering {
    match (rank(a), rank(b)) {
        (Some(ra), Some(rb)) => ra.cmp(&rb).then_with(|| a.cmp(b)),
        (Some(_), None) => Ordering::Greater,
        (None, Some(_)) => Ordering::Less,
        (None, None) => a.cmp(b),
    }
}

/// The end of life of a record that parses, without checking its signature: for a copy
/// byte-identical to one that passed [`validate`] before.
pub fn end_of_life_unchecked(record: &[u8]) -> Option<SystemTime> {
    rank(record).map(|(_, eol)| eol)
}

/// (sequence, end of life) of a record that parses, without checking its signature.
fn rank(record: &[u8]) -> Option<(u64, SystemTime)> {
    if record.len() > MAX_RECORD_SIZE {
        return None;
    }
    let entry = Entry::parse(record).ok()?;
    let (_, data) = entry.v2_parts().ok()?;
    let data = Data::parse(data).ok()?;
    Some((data.sequence, data.eol().ok()?))
}

/// The fields of an `IpnsEntry` protobuf, as read (the last of a repeated field wins).
#[derive(Debug, Default)]
struct Entry<'a> {
    value: Option<&'a [u8]>,
    signature_v1: Option<&'a [u8]>,
    validity_type: Option<u64>,
    validity: Option<&'a [u8]>,
    sequence: Option<u64>,
    ttl: Option<u64>,
    pub_key: Option<&'a [u8]>,
    signature_v2: Option<&'a [u8]>,
    data: Option<&'a [u8]>,
}

impl<'a> Entry<'a> {
    fn parse(record: &'a [u8]) -> Result<Self, ValidatorError> {
        let mut entry = Entry::default();
        let mut fields = proto::Fields::new(record);
        while let Some((number, value)) = fields
            .next_field()
            .map_err(ValidatorError::MalformedRecord)?
        {
            match (number, value) {
                (number::VALUE, Value::Bytes(b)) => entry.value = Some(b),
                (number::SIGNATURE_V1, Value::Bytes(b)) => entry.signature_v1 = Some(b),
                (number::VALIDITY_TYPE, Value::Varint(v)) => entry.validity_type = Some(v),
                (number::VALIDITY, Value::Bytes(b)) => entry.validity = Some(b),
                (number::SEQUENCE, Value::Varint(v)) => entry.sequence = Some(v),
                (number::TTL, Value::Varint(v)) => entry.ttl = Some(v),
                (number::PUB_KEY, Value::Bytes(b)) => entry.pub_key = Some(b),
                (number::SIGNATURE_V2, Value::Bytes(b)) => entry.signature_v2 = Some(b),
                (number::DATA, Value::Bytes(b)) => entry.data = Some(b),
                (number::VALUE..=number::DATA, _) => {
                    return Err(ValidatorError::MalformedRecord(
                        "a known field with the wrong wire type",
                    ));
                }
                // Unknown fields: ignored, as protobuf's forward compatibility asks.
                _ => {}
            }
        }
        Ok(entry)
    }

    /// `signatureV2` and `data`, both present and not empty.
    fn v2_parts(&self) -> Result<(&'a [u8], &'a [u8]), ValidatorError> {
        let signature = self.signature_v2.filter(|s| !s.is_empty());
        let data = self.data.filter(|d| !d.is_empty());
        match (signature, data) {
            (Some(signature), Some(data)) => Ok((signature, data)),
            (None, None) => Err(ValidatorError::V1Only),
            (None, Some(_)) => Err(ValidatorError::MissingSignatureV2),
            (Some(_), None) => Err(ValidatorError::MissingData),
        }
    }

    /// The V1 fields against their signed copies (see the module documentation).
    fn check_v1(&self, data: &Data<'_>) -> Result<(), ValidatorError> {
        let all = self.signature_v1.is_some_and(|s| !s.is_empty())
            || self.value.is_some_and(|v| !v.is_empty());
        same(self.value, data.value, &[], all, FIELD_VALUE)?;
        same(self.validity, data.validity, &[], all, FIELD_VALIDITY)?;
        same(
            self.validity_type,
            data.validity_type,
            0,
            all,
            FIELD_VALIDITY_TYPE,
        )?;
        same(self.sequence, data.sequence, 0, all, FIELD_SEQUENCE)?;
        same(self.ttl, data.ttl, 0, all, FIELD_TTL)
    }
}

/// A V1 field against its signed copy: a present field must match; an absent one too, read as
/// `absent`, when `all` fields are to be compared.
fn same<T: PartialEq>(
    v1: Option<T>,
    signed: T,
    absent: T,
    all: bool,
    field: &'static str,
) -> Result<(), ValidatorError> {
    let v1 = match v1 {
        Some(v) => v,
        None if all => absent,
        None => return Ok(()),
    };
    if v1 == signed {
        Ok(())
    } else {
        Err(ValidatorError::V1Mismatch(field))
    }
}

/// The signed fields of `data`.
#[derive(Debug)]
struct Data<'a> {
    value: &'a [u8],
    validity: &'a [u8],
    validity_type: u64,
    sequence: u64,
    ttl: u64,
}

impl<'a> Data<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Self, ValidatorError> {
        let entries =
            cbor::decode_map(bytes, MAX_DATA_NESTING).map_err(ValidatorError::MalformedData)?;
        let get = |field: &'static str| {
            entries
                .iter()
                .find(|(k, _)| *k == field)
                .map(|(_, v)| *v)
                .ok_or(ValidatorError::MissingField(field))
        };
        let bytes_of = |field| match get(field)? {
            Scalar::Bytes(b) => Ok(b),
            _ => Err(ValidatorError::WrongFieldType(field)),
        };
        let uint_of = |field| match get(field)? {
            Scalar::Uint(v) => Ok(v),
            _ => Err(ValidatorError::WrongFieldType(field)),
        };
        Ok(Data {
            value: bytes_of(FIELD_VALUE)?,
            validity: bytes_of(FIELD_VALIDITY)?,
            validity_type: uint_of(FIELD_VALIDITY_TYPE)?,
            sequence: uint_of(FIELD_SEQUENCE)?,
            ttl: uint_of(FIELD_TTL)?,
        })
    }

    /// The end of life, for the one validity type there is.
    fn eol(&self) -> Result<SystemTime, ValidatorError> {
        if self.validity_type != VALIDITY_TYPE_EOL {
            return Err(ValidatorError::UnknownValidityType(self.validity_type));
        }
        parse_rfc3339(self.validity).ok_or(ValidatorError::InvalidValidity)
    }
}

/// Length of the date in an RFC 3339 timestamp (`2006-01-02`), the time separator following it.
const DATE_LEN: usize = 10;

/// An RFC 3339 timestamp (`2006-01-02T15:04:05.999999999Z07:00`, as Go writes it) as a
/// `SystemTime`, or `None`.
fn parse_rfc3339(text: &[u8]) -> Option<SystemTime> {
    let text = std::str::from_utf8(text).ok()?;
    // Go, the reference, wants an upper-case 'T' and 'Z'; the parser also takes 't', ' ' and 'z'.
    if text.as_bytes().get(DATE_LEN) != Some(&b'T') || text.ends_with('z') {
        return None;
    }
    let at = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    let secs = at.unix_timestamp();
    let nanos = Duration::from_nanos(u64::from(at.nanosecond()));
    let whole = Duration::from_secs(secs.unsigned_abs());
    let base = if secs >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(whole)?
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(whole)?
    };
    base.checked_add(nanos)
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod vectors_tests;
