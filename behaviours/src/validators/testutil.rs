//! Test helpers: IPNS records built by hand per the specification (DAG-CBOR data, protobuf entry,
//! V1 and V2 signatures), and the RSA test keys.

use std::time::{Duration, SystemTime};

use libp2p::identity::Keypair;
use time::OffsetDateTime;

use super::ipns::SIGNATURE_V2_PREFIX;
use super::{MULTIHASH_IDENTITY, ipns};

/// Two 2048-bit RSA test keys (PKCS#8 DER, made with `openssl genpkey` for these tests only).
const RSA_KEYS: [&[u8]; 2] = [
    include_bytes!("fixtures/rsa-2048-a.pk8"),
    include_bytes!("fixtures/rsa-2048-b.pk8"),
];

/// RSA test key `which` (0 or 1): libp2p cannot generate RSA keys, only load them.
pub(crate) fn rsa_keypair(which: usize) -> Keypair {
    let mut der = RSA_KEYS[which].to_vec();
    Keypair::rsa_from_pkcs8(&mut der).expect("test RSA key loads")
}

// ---- CBOR ---------------------------------------------------------------------------------------

/// A CBOR head: major type and argument, in the shortest form (as DAG-CBOR wants).
pub(crate) fn cbor_head(out: &mut Vec<u8>, major: u8, arg: u64) {
    let m = major << 5;
    match arg {
        0..=23 => out.push(m | arg as u8),
        24..=0xff => out.extend([m | 24, arg as u8]),
        0x100..=0xffff => {
            out.push(m | 25);
            out.extend((arg as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(m | 26);
            out.extend((arg as u32).to_be_bytes());
        }
        _ => {
            out.push(m | 27);
            out.extend(arg.to_be_bytes());
        }
    }
}

/// A CBOR unsigned integer item.
pub(crate) fn cbor_uint(v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    cbor_head(&mut out, 0, v);
    out
}

/// A CBOR byte string item.
pub(crate) fn cbor_bytes(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    cbor_head(&mut out, 2, b.len() as u64);
    out.extend_from_slice(b);
    out
}

/// A CBOR text string item.
pub(crate) fn cbor_text(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    cbor_head(&mut out, 3, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
    out
}

/// A CBOR map of text keys to encoded items, keys sorted as DAG-CBOR sorts them (length, then
/// bytes); the entries are written as given otherwise (duplicates included).
pub(crate) fn cbor_map(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut sorted: Vec<&(&str, Vec<u8>)> = entries.iter().collect();
    sorted.sort_by(|a, b| a.0.len().cmp(&b.0.len()).then(a.0.cmp(b.0)));
    let mut out = Vec::new();
    cbor_head(&mut out, 5, entries.len() as u64);
    for (k, v) in sorted {
        out.extend(cbor_text(k));
        out.extend_from_slice(v);
    }
    out
}

// ---- the record ---------------------------------------------------------------------------------

/// An RFC 3339 timestamp with nanoseconds in UTC, as Go's `time.RFC3339Nano` writes it (without
/// trimming zeros).
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let t = OffsetDateTime::from(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond()
    )
}

/// The signed fields of a record.
#[derive(Debug, Clone)]
pub(crate) struct Fields {
    pub value: Vec<u8>,
    pub validity: Vec<u8>,
    pub validity_type: u64,
    pub sequence: u64,
    pub ttl: u64,
}

impl Fields {
    /// A record pointing at a fixed path, valid until `eol`, sequence 0, TTL 5 minutes.
    pub(crate) fn new(eol: SystemTime) -> Self {
        Fields {
            value: b"/ipfs/bafkqaddwgevxmmraojswg33smq".to_vec(),
            validity: rfc3339(eol).into_bytes(),
            validity_type: ipns::VALIDITY_TYPE_EOL,
            sequence: 0,
            ttl: Duration::from_secs(300).as_nanos() as u64,
        }
    }

    /// The five fields as `(key, encoded item)` pairs.
    pub(crate) fn entries(&self) -> Vec<(&'static str, Vec<u8>)> {
        vec![
            (ipns::FIELD_VALUE, cbor_bytes(&self.value)),
            (ipns::FIELD_VALIDITY, cbor_bytes(&self.validity)),
            (ipns::FIELD_VALIDITY_TYPE, cbor_uint(self.validity_type)),
            (ipns::FIELD_SEQUENCE, cbor_uint(self.sequence)),
            (ipns::FIELD_TTL, cbor_uint(self.ttl)),
        ]
    }

    /// The DAG-CBOR `data` field.
    pub(crate) fn cbor(&self) -> Vec<u8> {
        cbor_map(&self.entries())
    }
}

/// An `IpnsEntry`, field by field (`None`: absent).
#[derive(Debug, Clone, Default)]
pub(crate) struct Entry {
    pub value: Option<Vec<u8>>,
    pub signature_v1: Option<Vec<u8>>,
    pub validity_type: Option<u64>,
    pub validity: Option<Vec<u8>>,
    pub sequence: Option<u64>,
    pub ttl: Option<u64>,
    pub pub_key: Option<Vec<u8>>,
    pub signature_v2: Option<Vec<u8>>,
    pub data: Option<Vec<u8>>,
}

pub(crate) fn pb_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn pb_bytes(out: &mut Vec<u8>, field: u64, b: &[u8]) {
    pb_varint(out, field << 3 | 2);
    pb_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

pub(crate) fn pb_uint(out: &mut Vec<u8>, field: u64, v: u64) {
    pb_varint(out, field << 3);
    pb_varint(out, v);
}

impl Entry {
    /// The protobuf encoding, fields in number order as Go writes them.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let bytes = |out: &mut Vec<u8>, n, f: &Option<Vec<u8>>| {
            if let Some(b) = f {
                pb_bytes(out, n, b);
            }
        };
        let uint = |out: &mut Vec<u8>, n, f: Option<u64>| {
            if let Some(v) = f {
                pb_uint(out, n, v);
            }
        };
        bytes(&mut out, 1, &self.value);
        bytes(&mut out, 2, &self.signature_v1);
        uint(&mut out, 3, self.validity_type);
        bytes(&mut out, 4, &self.validity);
        uint(&mut out, 5, self.sequence);
        uint(&mut out, 6, self.ttl);
        bytes(&mut out, 7, &self.pub_key);
        bytes(&mut out, 8, &self.signature_v2);
        bytes(&mut out, 9, &self.data);
        out
    }
}

/// `ipns-signature:` then `data`, signed by `key`.
pub(crate) fn sign_v2(key: &Keypair, data: &[u8]) -> Vec<u8> {
    let mut msg = SIGNATURE_V2_PREFIX.to_vec();
    msg.extend_from_slice(data);
    key.sign(&msg).expect("test key signs")
}

/// The public key, when the key's name cannot inline it (RSA): what a publisher must embed.
fn pub_key_if_needed(key: &Keypair) -> Option<Vec<u8>> {
    let peer = key.public().to_peer_id();
    (peer.as_ref().code() != MULTIHASH_IDENTITY).then(|| key.public().encode_protobuf())
}

/// A V2-only record: `data`, `signatureV2`, and `pubKey` if the name does not inline the key.
pub(crate) fn signed_v2(key: &Keypair, fields: &Fields) -> Entry {
    signed_data(key, fields.cbor())
}

/// A V2-only record over arbitrary `data` bytes.
pub(crate) fn signed_data(key: &Keypair, data: Vec<u8>) -> Entry {
    Entry {
        pub_key: pub_key_if_needed(key),
        signature_v2: Some(sign_v2(key, &data)),
        data: Some(data),
        ..Entry::default()
    }
}

/// A V1+V2 record as Go's boxo makes by default: the V2 record plus the five V1 copies and a V1
/// signature over `value`, `validity` and the validity type in decimal.
pub(crate) fn signed_v1_v2(key: &Keypair, fields: &Fields) -> Entry {
    let mut entry = signed_v2(key, fields);
    let mut v1 = fields.value.clone();
    v1.extend_from_slice(&fields.validity);
    v1.extend_from_slice(fields.validity_type.to_string().as_bytes());
    entry.signature_v1 = Some(key.sign(&v1).expect("test key signs"));
    entry.value = Some(fields.value.clone());
    entry.validity = Some(fields.validity.clone());
    entry.validity_type = Some(fields.validity_type);
    entry.sequence = Some(fields.sequence);
    entry.ttl = Some(fields.ttl);
    entry
}
