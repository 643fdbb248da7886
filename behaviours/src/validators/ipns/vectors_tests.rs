//! IPNS records made by other tooling (the specification's vectors, Go and JS): read, validated and
//! selected as their makers meant.

use std::time::{Duration, SystemTime};

use libp2p::PeerId;
use libp2p::identity::{Keypair, PublicKey};

use super::tests::name_of;
use super::*;

/// Base36 (lowercase, multibase prefix `k`) decoding, for the names the vectors are published
/// under.
fn base36(text: &str) -> Vec<u8> {
    let digits = text.strip_prefix('k').expect("multibase base36");
    let mut out: Vec<u8> = Vec::new(); // big-endian
    for c in digits.chars() {
        let mut carry = c.to_digit(36).expect("base36 digit");
        for byte in out.iter_mut().rev() {
            let v = u32::from(*byte) * 36 + carry;
            *byte = (v & 0xff) as u8;
            carry = v >> 8;
        }
        while carry > 0 {
            out.insert(0, (carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    let zeros = digits.chars().take_while(|&c| c == '0').count();
    [vec![0; zeros], out].concat()
}

/// The binary multihash of an IPNS name written as a CIDv1 `libp2p-key` in base36.
fn name_from_cid(cid: &str) -> Vec<u8> {
    let bytes = base36(cid);
    assert_eq!(&bytes[..2], &[0x01, 0x72], "CIDv1, libp2p-key");
    bytes[2..].to_vec()
}

fn fixture(hex_text: &str) -> Vec<u8> {
    hex::decode(hex_text.trim()).expect("fixture hex")
}

fn at(rfc3339_text: &str) -> SystemTime {
    parse_rfc3339(rfc3339_text.as_bytes()).expect("test timestamp")
}

/// The specification's test vector 6, made by Go tooling (see fixtures/README.md).
const SPEC_VECTOR_6: &str = include_str!("../fixtures/ipns-spec-vector-6-v2-only.hex");
const SPEC_VECTOR_6_NAME: &str = "k51qzi5uqu5dit2ku9mutlfgwyz8u730on38kd10m97m36bjt66my99hb6103f";

#[test]
fn the_specifications_v2_only_vector_made_by_go_is_valid() {
    let record = fixture(SPEC_VECTOR_6);
    let name = name_from_cid(SPEC_VECTOR_6_NAME);
    let peer: PeerId = "12D3KooWGuR5BdSqp23UeoeesuwYwW3ebQ9rZ8aVwfWEDU8kvCYJ"
        .parse()
        .expect("peer id");
    assert_eq!(
        name,
        peer.to_bytes(),
        "the CID and the peer id name one key"
    );

    let before_eol = at("2025-01-01T00:00:00Z");
    let valid = validate(&name, &record, before_eol).expect("vector 6 is valid");
    assert_eq!(valid.value, b"/ipfs/bafkqadtwgiww63tmpeqhezldn5zgi");
    assert_eq!(valid.sequence, 0);
    assert_eq!(valid.eol, at("2123-08-14T12:17:03.694052Z"));

    // After its end of life, under another name, or with a byte of its data changed, it fails.
    assert_eq!(
        validate(&name, &record, at("2123-08-14T12:17:03.694053Z")),
        Err(ValidatorError::Expired)
    );
    let other = Keypair::generate_ed25519();
    assert_eq!(
        validate(&name_of(&other), &record, before_eol),
        Err(ValidatorError::BadSignature)
    );
    let mut tampered = record.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1; // ValidityType 0 becomes 1
    assert_eq!(
        validate(&name, &tampered, before_eol),
        Err(ValidatorError::BadSignature)
    );
    // And through the namespace dispatch, as a node would see it.
    let mut key = PREFIX.to_vec();
    key.extend_from_slice(&name);
    assert_eq!(
        crate::validators::validate(&key, &record, before_eol),
        Ok(())
    );
}

/// A V1+V2 RSA record made by js-ipns (see fixtures/README.md).
const JS_RSA_RECORD: &str = include_str!("../fixtures/js-ipns-rsa-v1-v2.hex");

#[test]
fn an_rsa_v1_v2_record_made_by_js_ipns_is_valid_before_its_eol() {
    let record = fixture(JS_RSA_RECORD);
    let entry = super::Entry::parse(&record).expect("parses");
    let key = PublicKey::try_decode_protobuf(entry.pub_key.expect("embedded key")).expect("key");
    let name = key.to_peer_id().to_bytes();
    assert_eq!(
        &name[..2],
        &[0x12, 0x20],
        "an RSA name is a SHA-256 multihash"
    );

    let before_eol = at("2023-04-17T00:00:00Z");
    let valid = validate(&name, &record, before_eol).expect("valid before its EOL");
    assert_eq!(
        valid.value,
        b"QmWEekX7EZLUd9VXRNMRXW3LXe4F6x7mB8oPxY5XLptrBq"
    );
    assert_eq!(valid.sequence, 0);
    assert_eq!(valid.ttl, Duration::from_secs(100));
    assert_eq!(valid.eol, at("2023-04-17T17:34:04.229Z"));
    assert_eq!(
        validate(&name, &record, at("2023-04-18T00:00:00Z")),
        Err(ValidatorError::Expired)
    );
    // Under an Ed25519 name the embedded key does not match.
    let other = Keypair::generate_ed25519();
    assert_eq!(
        validate(&name_of(&other), &record, before_eol),
        Err(ValidatorError::PublicKeyMismatch)
    );
}

/// The specification's six test vectors, with the verdicts it gives, read from
/// `IPNS_SPEC_VECTORS_DIR` (ipfs/gateway-conformance's `fixtures/ipns_records/`; not copied here).
#[test]
#[ignore = "needs IPNS_SPEC_VECTORS_DIR naming the specification's .ipns-record vectors"]
fn spec_vectors_from_a_directory() {
    let dir = std::env::var("IPNS_SPEC_VECTORS_DIR").expect("IPNS_SPEC_VECTORS_DIR is set");
    let expected: [(&str, Result<(), ValidatorError>); 6] = [
        ("v1", Err(ValidatorError::V1Only)),
        ("v1-v2", Ok(())),
        (
            "v1-v2-broken-v1-value",
            Err(ValidatorError::V1Mismatch(FIELD_VALUE)),
        ),
        (
            "v1-v2-broken-signature-v2",
            Err(ValidatorError::BadSignature),
        ),
        ("v1-v2-broken-signature-v1", Ok(())),
        ("v2", Ok(())),
    ];
    let now = at("2025-01-01T00:00:00Z");
    let mut seen = 0;
    for dir_entry in std::fs::read_dir(&dir).expect("readable directory") {
        let path = dir_entry.expect("entry").path();
        let Some(stem) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".ipns-record"))
        else {
            continue;
        };
        let Some((cid, kind)) = stem.split_once('_') else {
            continue;
        };
        let Some((_, verdict)) = expected.iter().find(|(k, _)| *k == kind) else {
            continue;
        };
        let record = std::fs::read(&path).expect("readable vector");
        let got = validate(&name_from_cid(cid), &record, now).map(drop);
        assert_eq!(&got, verdict, "{stem}");
        seen += 1;
    }
    assert_eq!(seen, expected.len(), "every vector found in {dir}");
}
