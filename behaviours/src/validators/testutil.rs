//! Test helpers: IPNS records put together field by field, any field wrong or missing at will (on
//! the library's encoders, `ipns::build`), and the RSA test keys.

use std::time::{Duration, SystemTime};

use libp2p::identity::Keypair;

use super::ipns;
use super::ipns::build::{
    EntryFields, RecordFields, embedded_public_key, format_validity, signature_v2_payload,
};

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

/// An RFC 3339 timestamp as records carry it (Go's `time.RFC3339Nano` in UTC).
pub(crate) fn rfc3339(t: SystemTime) -> String {
    format_validity(t).expect("test time is within RFC 3339's years")
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

    /// The fields as the library writes them.
    pub(crate) fn as_written(&self) -> RecordFields<'_> {
        RecordFields {
            value: &self.value,
            validity: &self.validity,
            validity_type: self.validity_type,
            sequence: self.sequence,
            ttl: self.ttl,
        }
    }

    /// The five fields as `(key, encoded item)` pairs.
    pub(crate) fn entries(&self) -> Vec<(&'static str, Vec<u8>)> {
        self.as_written().data_entries()
    }

    /// The DAG-CBOR `data` field.
    pub(crate) fn cbor(&self) -> Vec<u8> {
        self.as_written().data()
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

impl Entry {
    /// The protobuf encoding, fields in number order as Go writes them.
    pub(crate) fn encode(&self) -> Vec<u8> {
        EntryFields {
            value: self.value.as_deref(),
            signature_v1: self.signature_v1.as_deref(),
            validity_type: self.validity_type,
            validity: self.validity.as_deref(),
            sequence: self.sequence,
            ttl: self.ttl,
            pub_key: self.pub_key.as_deref(),
            signature_v2: self.signature_v2.as_deref(),
            data: self.data.as_deref(),
        }
        .encode()
    }
}

/// `ipns-signature:` then `data`, signed by `key`.
pub(crate) fn sign_v2(key: &Keypair, data: &[u8]) -> Vec<u8> {
    key.sign(&signature_v2_payload(data))
        .expect("test key signs")
}

/// A V2-only record: `data`, `signatureV2`, and `pubKey` if the name does not inline the key.
pub(crate) fn signed_v2(key: &Keypair, fields: &Fields) -> Entry {
    signed_data(key, fields.cbor())
}

/// A V2-only record over arbitrary `data` bytes.
pub(crate) fn signed_data(key: &Keypair, data: Vec<u8>) -> Entry {
    Entry {
        // What `build_record` embeds: the key, when the name cannot inline it (RSA).
        pub_key: embedded_public_key(key).expect("test key fits"),
        signature_v2: Some(sign_v2(key, &data)),
        data: Some(data),
        ..Entry::default()
    }
}

/// A V1+V2 record as Go's boxo makes by default: the V2 record plus the five V1 copies and a V1
/// signature over `value`, `validity` and the validity type's name (what `build_record` makes, but
/// from any fields, valid or not).
pub(crate) fn signed_v1_v2(key: &Keypair, fields: &Fields) -> Entry {
    let mut entry = signed_v2(key, fields);
    let v1 = fields.as_written().signature_v1_payload();
    entry.signature_v1 = Some(key.sign(&v1).expect("test key signs"));
    entry.value = Some(fields.value.clone());
    entry.validity = Some(fields.validity.clone());
    entry.validity_type = Some(fields.validity_type);
    entry.sequence = Some(fields.sequence);
    entry.ttl = Some(fields.ttl);
    entry
}
