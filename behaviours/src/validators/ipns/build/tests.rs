//! Record building: records built for Ed25519 and RSA keys validate; the data is canonical
//! DAG-CBOR, byte for byte what Go made for the specification's vector; the V1 signature signs
//! what boxo and js-ipns sign; every limit is an error.

use std::cmp::Ordering;

use libp2p::identity::PublicKey;

use super::super::super::cbor::{Scalar, decode_map, key_order};
use super::super::super::proto::{Fields as ProtoFields, Value as ProtoValue};
use super::super::super::testutil::rsa_keypair;
use super::super::super::{Namespace, ValidatorError};
use super::super::{IpnsRecord, MAX_DATA_NESTING, parse_rfc3339, select, validate};
use super::*;

const MINUTE: Duration = Duration::from_secs(60);
const VALUE: &[u8] = b"/ipfs/bafkqaddwgevxmmraojswg33smq";

fn at(text: &str) -> SystemTime {
    parse_rfc3339(text.as_bytes()).expect("test timestamp")
}

fn name_of(key: &Keypair) -> Vec<u8> {
    key.public().to_peer_id().to_bytes()
}

fn fixture(hex_text: &str) -> Vec<u8> {
    hex::decode(hex_text.trim()).expect("fixture hex")
}

/// The protobuf fields of a record as (number, payload), in order.
fn proto_fields(record: &[u8]) -> Vec<(u64, ProtoValue<'_>)> {
    let mut fields = ProtoFields::new(record);
    let mut out = Vec::new();
    while let Some(field) = fields.next_field().expect("record parses") {
        out.push(field);
    }
    out
}

/// A record built by `key` at `now`, valid for an hour.
fn build(key: &Keypair, now: SystemTime, sequence: u64) -> Vec<u8> {
    build_record(key, VALUE, sequence, now + 60 * MINUTE, DEFAULT_TTL).expect("builds")
}

// ---- valid records ------------------------------------------------------------------------------

#[test]
fn an_ed25519_record_validates_and_says_what_was_built() {
    let now = SystemTime::now();
    let key = Keypair::generate_ed25519();
    let eol = now + 60 * MINUTE;
    let ttl = Duration::from_nanos(1_234_567_890);
    let record = build_record(&key, VALUE, 7, eol, ttl).expect("builds");
    assert_eq!(
        validate(&name_of(&key), &record, now),
        Ok(IpnsRecord {
            value: VALUE.to_vec(),
            sequence: 7,
            eol,
            ttl,
        })
    );
    let entry = Entry::parse(&record).expect("parses");
    assert_eq!(entry.pub_key, None, "an Ed25519 name inlines the key");
    // The V1 copies are all there, equal to the signed ones.
    assert_eq!(entry.value, Some(VALUE));
    assert_eq!(entry.validity_type, Some(VALIDITY_TYPE_EOL));
    assert_eq!(entry.sequence, Some(7));
    assert_eq!(entry.ttl, Some(1_234_567_890));
    assert_eq!(
        entry.validity.map(parse_rfc3339),
        Some(Some(eol)),
        "nanoseconds survive"
    );
    assert!(entry.signature_v1.is_some_and(|s| !s.is_empty()));
    // Past its end of life it is refused like any other.
    assert_eq!(
        validate(&name_of(&key), &record, eol),
        Err(ValidatorError::Expired)
    );
}

#[test]
fn an_rsa_record_embeds_its_key_and_validates() {
    let now = SystemTime::now();
    for which in 0..2 {
        let key = rsa_keypair(which);
        let record = build(&key, now, 3);
        let entry = Entry::parse(&record).expect("parses");
        assert_eq!(
            entry.pub_key,
            Some(&key.public().encode_protobuf()[..]),
            "an RSA name cannot inline the key"
        );
        let valid = validate(&name_of(&key), &record, now).expect("valid");
        assert_eq!((valid.value.as_slice(), valid.sequence), (VALUE, 3));
        // Under the other RSA key's name, the embedded key does not match.
        assert_eq!(
            validate(&name_of(&rsa_keypair(1 - which)), &record, now),
            Err(ValidatorError::PublicKeyMismatch)
        );
    }
}

#[test]
fn secp256k1_and_ecdsa_records_validate_under_their_names_only() {
    let now = SystemTime::now();
    let (secp, ecdsa) = (Keypair::generate_secp256k1(), Keypair::generate_ecdsa());
    for (key, other) in [(&secp, &ecdsa), (&ecdsa, &secp)] {
        let record = build(key, now, 5);
        let valid = validate(&name_of(key), &record, now).expect("valid");
        assert_eq!((valid.value.as_slice(), valid.sequence), (VALUE, 5));
        assert!(validate(&name_of(other), &record, now).is_err());
    }
    // A secp256k1 name inlines its key (an identity multihash); an ECDSA one is too long to, and
    // the record carries it.
    let inlined = |key: &Keypair| {
        Entry::parse(&build(key, now, 1))
            .expect("parses")
            .pub_key
            .is_none()
    };
    assert!(inlined(&secp));
    assert!(!inlined(&ecdsa));
}

#[test]
fn routing_key_for_is_the_key_records_are_validated_under() {
    let now = SystemTime::now();
    for key in [Keypair::generate_ed25519(), rsa_keypair(0)] {
        let routing = routing_key_for(&key);
        assert_eq!(routing, routing_key(&key.public().to_peer_id()));
        assert_eq!(
            Namespace::of(&routing),
            Some((Namespace::Ipns, &name_of(&key)[..]))
        );
        let record = build(&key, now, 0);
        assert_eq!(crate::validators::validate(&routing, &record, now), Ok(()));
    }
}

#[test]
fn ed25519_records_are_deterministic() {
    let now = SystemTime::now();
    let key = Keypair::generate_ed25519();
    assert_eq!(build(&key, now, 1), build(&key, now, 1));
    assert_ne!(build(&key, now, 1), build(&key, now, 2));
}

// ---- selection and sequences --------------------------------------------------------------------

#[test]
fn select_prefers_the_higher_sequence_then_the_later_eol() {
    let now = SystemTime::now();
    let key = Keypair::generate_ed25519();
    let routing = routing_key_for(&key);
    let old = build_record(&key, VALUE, 1, now + 120 * MINUTE, DEFAULT_TTL).expect("builds");
    // A higher sequence wins even with an earlier end of life.
    let new = build_record(&key, b"/ipfs/other", 2, now + MINUTE, DEFAULT_TTL).expect("builds");
    assert_eq!(select(&new, &old), Ordering::Greater);
    assert_eq!(select(&old, &new), Ordering::Less);
    assert_eq!(
        crate::validators::select(&routing, &new, &old),
        Ordering::Greater
    );
    // With one sequence, the later end of life wins.
    let longer = build_record(&key, VALUE, 1, now + 180 * MINUTE, DEFAULT_TTL).expect("builds");
    assert_eq!(select(&longer, &old), Ordering::Greater);
}

#[test]
fn a_publisher_numbers_its_records_from_the_one_it_holds() {
    let now = SystemTime::now();
    let key = rsa_keypair(0);
    let first = build(&key, now, next_sequence(None).expect("a first sequence"));
    assert_eq!(sequence_of(&first), Some(0));
    let held = validate(&name_of(&key), &first, now)
        .expect("valid")
        .sequence;
    let second = build(&key, now, next_sequence(Some(held)).expect("a next one"));
    assert_eq!(sequence_of(&second), Some(1));
    assert_eq!(select(&second, &first), Ordering::Greater);

    assert_eq!(
        sequence_of(&fixture(include_str!(
            "../../fixtures/ipns-spec-vector-6-v2-only.hex"
        ))),
        Some(0)
    );
    for garbage in [&b""[..], b"garbage", &[0u8; MAX_RECORD_SIZE + 1]] {
        assert_eq!(sequence_of(garbage), None);
    }
    assert_eq!(next_sequence(Some(41)).ok(), Some(42));
    assert_eq!(
        next_sequence(Some(MAX_SEQUENCE - 1)).ok(),
        Some(MAX_SEQUENCE)
    );
    for held in [MAX_SEQUENCE, u64::MAX] {
        assert!(matches!(
            next_sequence(Some(held)),
            Err(BuildError::SequenceTooLarge { sequence, max: MAX_SEQUENCE }) if sequence == held
        ));
    }
}

// ---- the encoding -------------------------------------------------------------------------------

#[test]
fn the_data_is_canonical_dag_cbor() {
    let now = SystemTime::now();
    let key = Keypair::generate_ed25519();
    let record = build_record(&key, VALUE, 300, now + MINUTE, Duration::from_secs(1)).expect("ok");
    let entry = Entry::parse(&record).expect("parses");
    let data = entry.data.expect("data");
    let map = decode_map(data, MAX_DATA_NESTING).expect("DAG-CBOR map");
    let keys: Vec<&str> = map.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        keys,
        [
            FIELD_TTL,
            FIELD_VALUE,
            FIELD_SEQUENCE,
            FIELD_VALIDITY,
            FIELD_VALIDITY_TYPE
        ]
    );
    assert!(keys.is_sorted_by(|a, b| key_order(a, b) == Ordering::Less));
    assert_eq!(map[0].1, Scalar::Uint(1_000_000_000));
    assert_eq!(map[2].1, Scalar::Uint(300));
    // Shortest heads: a five-entry map, TTL in four bytes, sequence 300 in two, type 0 inline.
    assert_eq!(data[0], 0xa5);
    let ttl_at = 1 + 4; // the map head, then "TTL" as text
    assert_eq!(&data[ttl_at..ttl_at + 5], &[0x1a, 0x3b, 0x9a, 0xca, 0x00]);
    assert!(data.windows(4).any(|w| w == [b'e', 0x19, 0x01, 0x2c]));
    assert_eq!(data.last(), Some(&0x00));
}

/// The specification's test vector 6, made by Go's boxo (see fixtures/README.md).
const SPEC_VECTOR_6: &str = include_str!("../../fixtures/ipns-spec-vector-6-v2-only.hex");

#[test]
fn the_data_is_byte_for_byte_what_go_made_for_the_spec_vector() {
    // Vector 6's key is not public, but `data` does not depend on the key: the same fields must
    // give the same bytes, whoever signs them.
    let vector = fixture(SPEC_VECTOR_6);
    let go_data = Entry::parse(&vector)
        .expect("parses")
        .data
        .expect("data")
        .to_vec();
    let value = b"/ipfs/bafkqadtwgiww63tmpeqhezldn5zgi";
    let eol = at("2123-08-14T12:17:03.694052Z");
    let ttl = 30 * MINUTE;
    let built = build_record(&Keypair::generate_ed25519(), value, 0, eol, ttl).expect("builds");
    let entry = Entry::parse(&built).expect("parses");
    assert_eq!(
        entry.data.map(hex::encode),
        Some(hex::encode(&go_data)),
        "the data field, as Go wrote it"
    );
    assert_eq!(
        entry.validity,
        Some(&b"2123-08-14T12:17:03.694052Z"[..]),
        "trailing zeros of the nanoseconds trimmed, as Go's RFC3339Nano does"
    );
}

#[test]
fn the_protobuf_fields_come_once_each_in_number_order() {
    let now = SystemTime::now();
    let ed25519 = build(&Keypair::generate_ed25519(), now, 0);
    let numbers: Vec<u64> = proto_fields(&ed25519).iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, [1, 2, 3, 4, 5, 6, 8, 9]);
    let rsa = build(&rsa_keypair(0), now, 0);
    let numbers: Vec<u64> = proto_fields(&rsa).iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
}

/// Whether `signatureV1` of `record` verifies over `value`, `validity` and `type_text`.
fn v1_signs(key: &PublicKey, record: &[u8], type_text: &str) -> bool {
    let entry = Entry::parse(record).expect("parses");
    let mut signed = entry.value.expect("value").to_vec();
    signed.extend_from_slice(entry.validity.expect("validity"));
    signed.extend_from_slice(type_text.as_bytes());
    key.verify(&signed, entry.signature_v1.expect("signatureV1"))
}

#[test]
fn signature_v1_signs_what_js_ipns_and_boxo_sign() {
    // js-ipns's record: its V1 signature is over the validity type's name, not its number.
    let js = fixture(include_str!("../../fixtures/js-ipns-rsa-v1-v2.hex"));
    let js_key = PublicKey::try_decode_protobuf(
        Entry::parse(&js)
            .expect("parses")
            .pub_key
            .expect("embedded"),
    )
    .expect("key");
    assert!(v1_signs(&js_key, &js, SIGNATURE_V1_EOL));
    assert!(!v1_signs(&js_key, &js, "0"));

    let now = SystemTime::now();
    for key in [Keypair::generate_ed25519(), rsa_keypair(1)] {
        let record = build(&key, now, 0);
        assert!(v1_signs(&key.public(), &record, SIGNATURE_V1_EOL));
    }
}

// ---- validity timestamps ------------------------------------------------------------------------

#[test]
fn validity_is_written_as_go_writes_rfc3339_nano() {
    let epoch = SystemTime::UNIX_EPOCH;
    for (t, text) in [
        (epoch, "1970-01-01T00:00:00Z"),
        (
            epoch + Duration::from_nanos(1),
            "1970-01-01T00:00:00.000000001Z",
        ),
        (
            epoch + Duration::from_millis(1500),
            "1970-01-01T00:00:01.5Z",
        ),
        (epoch - Duration::from_millis(500), "1969-12-31T23:59:59.5Z"),
        (
            at("2123-08-14T12:17:03.694052Z"),
            "2123-08-14T12:17:03.694052Z",
        ),
        (
            at("2024-02-29T23:59:59.999999999Z"),
            "2024-02-29T23:59:59.999999999Z",
        ),
        (at("0000-01-01T00:00:00Z"), "0000-01-01T00:00:00Z"),
        (
            at("9999-12-31T23:59:59.999999999Z"),
            "9999-12-31T23:59:59.999999999Z",
        ),
    ] {
        let written = format_validity(t).expect("in range");
        assert_eq!(written, text);
        assert_eq!(
            parse_rfc3339(written.as_bytes()),
            Some(t),
            "{text} reads back"
        );
    }
}

#[test]
fn an_end_of_life_rfc3339_cannot_write_is_an_error() {
    let key = Keypair::generate_ed25519();
    let year_10000 = at("9999-12-31T23:59:59.999999999Z") + Duration::from_nanos(1);
    let before_year_0 = at("0000-01-01T00:00:00Z") - Duration::from_nanos(1);
    let far = SystemTime::UNIX_EPOCH + Duration::from_secs(1 << 40);
    for eol in [year_10000, before_year_0, far] {
        assert!(matches!(
            build_record(&key, VALUE, 0, eol, DEFAULT_TTL),
            Err(BuildError::EolOutOfRange)
        ));
    }
}

// ---- limits -------------------------------------------------------------------------------------

#[test]
fn the_largest_value_that_fits_builds_and_one_byte_more_does_not() {
    let now = SystemTime::now();
    for key in [Keypair::generate_ed25519(), rsa_keypair(0)] {
        let build_with =
            |len: usize| build_record(&key, &vec![b'a'; len], 0, now + MINUTE, DEFAULT_TTL);
        let empty = build_with(0).expect("an empty value builds").len();
        // The value is in the record twice; its length varints may grow a byte or two.
        let mut len = (MAX_RECORD_SIZE - empty) / 2;
        while build_with(len + 1).is_ok() {
            len += 1;
        }
        while build_with(len).is_err() {
            len -= 1;
        }
        let record = build_with(len).expect("fits");
        assert!(record.len() <= MAX_RECORD_SIZE);
        assert!(
            MAX_RECORD_SIZE - record.len() < 2,
            "no room for one byte more"
        );
        assert!(validate(&name_of(&key), &record, now).is_ok());
        assert!(matches!(
            build_with(len + 1),
            Err(BuildError::RecordTooLarge { size, max: MAX_RECORD_SIZE }) if size > MAX_RECORD_SIZE
        ));
    }
}

#[test]
fn a_value_that_can_never_fit_is_refused_before_signing() {
    let key = Keypair::generate_ed25519();
    let eol = SystemTime::now() + MINUTE;
    for len in [MAX_VALUE_SIZE + 1, 10 * MAX_RECORD_SIZE] {
        assert!(matches!(
            build_record(&key, &vec![0; len], 0, eol, DEFAULT_TTL),
            Err(BuildError::ValueTooLarge { size, max: MAX_VALUE_SIZE }) if size == len
        ));
    }
}

#[test]
fn sequences_and_ttls_go_cannot_read_are_refused() {
    let now = SystemTime::now();
    let key = Keypair::generate_ed25519();
    let eol = now + MINUTE;
    let record = build_record(&key, VALUE, MAX_SEQUENCE, eol, MAX_TTL).expect("the largest");
    let valid = validate(&name_of(&key), &record, now).expect("valid");
    assert_eq!((valid.sequence, valid.ttl), (MAX_SEQUENCE, MAX_TTL));

    for sequence in [MAX_SEQUENCE + 1, u64::MAX] {
        assert!(matches!(
            build_record(&key, VALUE, sequence, eol, DEFAULT_TTL),
            Err(BuildError::SequenceTooLarge { sequence: s, max: MAX_SEQUENCE }) if s == sequence
        ));
    }
    for ttl in [MAX_TTL + Duration::from_nanos(1), Duration::MAX] {
        assert!(matches!(
            build_record(&key, VALUE, 0, eol, ttl),
            Err(BuildError::TtlTooLarge { ttl: t, max: MAX_TTL }) if t == ttl
        ));
    }
    assert!(build_record(&key, VALUE, 0, eol, Duration::ZERO).is_ok());
}

#[test]
fn errors_say_what_went_wrong() {
    let error = BuildError::ValueTooLarge {
        size: 6000,
        max: MAX_VALUE_SIZE,
    };
    assert_eq!(
        error.to_string(),
        "the value is 6000 bytes where at most 5120 can fit in a record"
    );
    assert_eq!(
        BuildError::EolOutOfRange.to_string(),
        "the end of life is outside years 0 to 9999"
    );
}
