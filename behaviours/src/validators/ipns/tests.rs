//! IPNS record validation: records built here per the specification with Ed25519 and RSA keys, one
//! test per way a record can be wrong, selection, and records made by Go and JS tooling.

use std::cmp::Ordering;
use std::time::{Duration, SystemTime};

use libp2p::PeerId;
use libp2p::identity::Keypair;

use super::super::cbor::{
    encode_bytes as cbor_bytes, encode_map as cbor_map, encode_text as cbor_text,
    encode_uint as cbor_uint,
};
use super::super::proto::{write_bytes_field as pb_bytes, write_uint_field as pb_uint};
use super::super::testutil::{Entry, Fields, rsa_keypair, signed_data, signed_v1_v2, signed_v2};
use super::*;

const MINUTE: Duration = Duration::from_secs(60);

fn now() -> SystemTime {
    SystemTime::now()
}

pub(super) fn name_of(key: &Keypair) -> Vec<u8> {
    key.public().to_peer_id().to_bytes()
}

/// Fields valid for an hour from `now`.
fn fields(now: SystemTime) -> Fields {
    Fields::new(now + 60 * MINUTE)
}

fn check(key: &Keypair, entry: &Entry, now: SystemTime) -> Result<IpnsRecord, ValidatorError> {
    validate(&name_of(key), &entry.encode(), now)
}

// ---- valid records ------------------------------------------------------------------------------

#[test]
fn an_ed25519_v2_only_record_is_valid_and_says_what_it_signed() {
    let now = now();
    let key = Keypair::generate_ed25519();
    let mut f = fields(now);
    f.sequence = 7;
    f.ttl = 1_000;
    let entry = signed_v2(&key, &f);
    assert_eq!(entry.pub_key, None, "ed25519 names inline the key");
    let record = check(&key, &entry, now).expect("valid");
    assert_eq!(record.value, f.value);
    assert_eq!(record.sequence, 7);
    assert_eq!(record.ttl, Duration::from_nanos(1_000));
    let eol = record.eol.duration_since(now).expect("eol after now");
    assert!(eol > 59 * MINUTE && eol <= 60 * MINUTE, "{eol:?}");
}

#[test]
fn an_ed25519_v1_v2_record_is_valid() {
    let now = now();
    let key = Keypair::generate_ed25519();
    assert!(check(&key, &signed_v1_v2(&key, &fields(now)), now).is_ok());
}

#[test]
fn an_rsa_record_with_its_key_embedded_is_valid() {
    let now = now();
    let key = rsa_keypair(0);
    let entry = signed_v1_v2(&key, &fields(now));
    assert!(entry.pub_key.is_some(), "RSA names cannot inline the key");
    assert!(check(&key, &entry, now).is_ok());
    assert!(check(&key, &signed_v2(&key, &fields(now)), now).is_ok());
}

#[test]
fn an_ed25519_record_may_also_embed_its_key() {
    let now = now();
    let key = Keypair::generate_ed25519();
    let mut entry = signed_v2(&key, &fields(now));
    entry.pub_key = Some(key.public().encode_protobuf());
    assert!(check(&key, &entry, now).is_ok());
    // An empty pubKey counts as absent.
    entry.pub_key = Some(Vec::new());
    assert!(check(&key, &entry, now).is_ok());
}

#[test]
fn signature_v1_is_never_looked_at() {
    let now = now();
    let key = Keypair::generate_ed25519();
    let mut entry = signed_v1_v2(&key, &fields(now));
    entry.signature_v1 = Some(b"garbage".to_vec());
    assert!(check(&key, &entry, now).is_ok());
    entry.signature_v1 = None;
    assert!(check(&key, &entry, now).is_ok());
}

#[test]
fn unknown_data_fields_and_unknown_protobuf_fields_are_ignored() {
    let now = now();
    let key = Keypair::generate_ed25519();
    let f = fields(now);
    let mut entries = f.entries();
    entries.push(("_custom", cbor_text("hello")));
    entries.push((
        "_ns",
        cbor_map(&[("n", cbor_uint(1)), ("l", vec![0x82, 0x01, 0xf6])]),
    ));
    let mut raw = signed_data(&key, cbor_map(&entries)).encode();
    pb_bytes(&mut raw, 42, b"from the future");
    pb_uint(&mut raw, 43, 1);
    let record = validate(&name_of(&key), &raw, now).expect("valid");
    assert_eq!(record.value, f.value);
}

#[test]
fn validity_with_an_offset_or_without_fraction_is_read_as_rfc3339() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000); // 2023-11-14T22:13:20Z
    let key = Keypair::generate_ed25519();
    let mut f = fields(now);
    // 23:13:20+01:00 is 22:13:20Z: exactly now, so expired; a second later it is valid.
    f.validity = b"2023-11-14T23:13:20+01:00".to_vec();
    assert_eq!(
        check(&key, &signed_v2(&key, &f), now),
        Err(ValidatorError::Expired)
    );
    f.validity = b"2023-11-14T23:13:21+01:00".to_vec();
    let record = check(&key, &signed_v2(&key, &f), now).expect("valid");
    assert_eq!(record.eol, now + Duration::from_secs(1));
    f.validity = b"2023-11-14T22:13:20.000000001Z".to_vec();
    let record = check(&key, &signed_v2(&key, &f), now).expect("valid");
    assert_eq!(record.eol, now + Duration::from_nanos(1));
}

#[test]
fn a_record_of_exactly_the_size_limit_is_valid_and_one_byte_more_is_not() {
    let now = now();
    let key = Keypair::generate_ed25519();
    let build = |pad: usize| {
        let mut f = fields(now);
        f.value = vec![b'a'; pad];
        signed_v2(&key, &f).encode()
    };
    // Grow the value until the record is exactly the limit (length varints may jump a byte).
    let mut pad = MAX_RECORD_SIZE - build(0).len();
    while build(pad).len() > MAX_RECORD_SIZE {
        pad -= 1;
    }
    let exact = build(pad);
    assert_eq!(exact.len(), MAX_RECORD_SIZE);
    assert!(validate(&name_of(&key), &exact, now).is_ok());
    let mut over = exact.clone();
    pb_uint(&mut over, 15, 0); // two bytes of an unknown field
    assert_eq!(
        validate(&name_of(&key), &over, now),
        Err(ValidatorError::TooLarge {
            size: MAX_RECORD_SIZE + 2,
            max: MAX_RECORD_SIZE
        })
    );
}

// ---- each way a record can be wrong -------------------------------------------------------------

#[test]
fn a_bad_signature_is_refused() {
    let now = now();
    for key in [Keypair::generate_ed25519(), rsa_keypair(0)] {
        let mut entry = signed_v2(&key, &fields(now));
        let sig = entry.signature_v2.as_mut().expect("signed");
        sig[0] ^= 1;
        assert_eq!(check(&key, &entry, now), Err(ValidatorError::BadSignature));
        entry.signature_v2 = Some(vec![1; 3]);
        assert_eq!(check(&key, &entry, now), Err(ValidatorError::BadSignature));
    }
}

#[test]
fn data_changed_after_signing_is_refused() {
    let now = now();
    let key = Keypair::generate_ed25519();
    let mut entry = signed_v2(&key, &fields(now));
    let mut later = fields(now);
    later.sequence = 99;
    entry.data = Some(later.cbor());
    assert_eq!(check(&key, &entry, now), Err(ValidatorError::BadSignature));
}

#[test]
fn a_signature_over_data_without_the_prefix_is_refused() {
    let now = now();
    let key = Keypair::generate_ed25519();
    let data = fields(now).cbor();
    let entry = Entry {
        signature_v2: Some(key.sign(&data).expect("signs")),
        data: Some(data),
        ..Entry::default()
    };
    assert_eq!(check(&key, &entry, now), Err(ValidatorError::BadSignature));
}

#[test]
fn a_record_signed_by_another_key_under_the_name_is_refused() {
    let now = now();
    let (owner, other) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let entry = signed_v2(&other, &fields(now)).encode();
    // Ed25519: the key comes from the name, so the signature fails.
    assert_eq!(
        validate(&name_of(&owner), &entry, now),
        Err(ValidatorError::BadSignature)
    );
    // RSA: the embedded key does not hash to the name.
    let (rsa_owner, rsa_other) = (rsa_keypair(0), rsa_keypair(1));
    let entry = signed_v2(&rsa_other, &fields(now)).encode();
    assert_eq!(
        validate(&name_of(&rsa_owner), &entry, now),
        Err(ValidatorError::PublicKeyMismatch)
    );
}

#[test]
fn a_pub_key_not_matching_the_name_is_refused() {
    let now = now();
    let key = Keypair::generate_ed25519();
    let mut entry = signed_v2(&key, &fields(now));
    entry.pub_key = Some(Keypair::generate_ed25519().public().encode_protobuf());
    assert_eq!(
        check(&key, &entry, now),
        Err(ValidatorError::PublicKeyMismatch)
    );
    // The RSA owner's record with the other RSA key swapped in, properly signed by the owner.
    let rsa = rsa_keypair(0);
    let mut entry = signed_v2(&rsa, &fields(now));
    entry.pub_key = Some(rsa_keypair(1).public().encode_protobuf());
    assert_eq!(
        check(&rsa, &entry, now),
        Err(ValidatorError::PublicKeyMismatch)
    );
}

#[test]
fn a_garbage_or_unsupported_pub_key_is_refused() {
    let now = now();
    let key = rsa_keypair(0);
    let mut entry = signed_v2(&key, &fields(now));
    entry.pub_key = Some(b"probably not a public key".to_vec());
    assert_eq!(
        check(&key, &entry, now),
        Err(ValidatorError::InvalidPublicKey)
    );
    entry.pub_key = Some(vec![0x08, 0x07, 0x12, 0x01, 0x02]);
    assert_eq!(
        check(&key, &entry, now),
        Err(ValidatorError::UnsupportedKeyType(7))
    );
}

#[test]
fn an_rsa_name_without_an_embedded_key_is_refused() {
    let now = now();
    let key = rsa_keypair(0);
    let mut entry = signed_v2(&key, &fields(now));
    entry.pub_key = None;
    assert_eq!(
        check(&key, &entry, now),
        Err(ValidatorError::PublicKeyNotFound)
    );
}

#[test]
fn wrong_or_malformed_names_are_refused() {
    let now = now();
    let key = Keypair::generate_ed25519();
    let record = signed_v2(&key, &fields(now)).encode();
    let mut trailing = name_of(&key);
    trailing.push(0);
    for name in [Vec::new(), b"bad key".to_vec(), trailing] {
        assert_eq!(
            validate(&name, &record, now),
            Err(ValidatorError::InvalidName),
            "{name:02x?}"
        );
    }
    // An identity multihash that inlines no public key.
    let bogus = PeerId::from_bytes(&[0x00, 0x03, 1, 2, 3]).expect("identity peer id");
    assert_eq!(
        validate(&bogus.to_bytes(), &record, now),
        Err(ValidatorError::InvalidPublicKey)
    );
}

/// A change to an entry, for tables of spoiled records.
type Spoil = fn(&mut Entry);

#[test]
fn v1_fields_disagreeing_with_the_signed_data_are_refused() {
    let now = now();
    let key = Keypair::generate_ed25519();
    let good = signed_v1_v2(&key, &fields(now));
    let cases: [(&str, Spoil); 5] = [
        (FIELD_VALUE, |e| e.value = Some(b"/ipfs/other".to_vec())),
        (FIELD_VALIDITY, |e| {
            e.validity = Some(b"2999-01-01T00:00:00Z".to_vec())
        }),
        (FIELD_VALIDITY_TYPE, |e| e.validity_type = Some(1)),
        (FIELD_SEQUENCE, |e| e.sequence = Some(5)),
        (FIELD_TTL, |e| e.ttl = Some(1)),
    ];
    for (field, spoil) in cases {
        let mut entry = good.clone();
        spoil(&mut entry);
        assert_eq!(
            check(&key, &entry, now),
            Err(ValidatorError::V1Mismatch(field)),
            "{field}"
        );
        // Without value and signatureV1, a present V1 field must still agree.
        entry.signature_v1 = None;
        if field != FIELD_VALUE {
            entry.value = None;
        }
        assert_eq!(
            check(&key, &entry, now),
            Err(ValidatorError::V1Mismatch(field)),
            "{field}, no signatureV1"
        );
    }
}

#[test]
fn with_value_or_signature_v1_present_absent_v1_fields_count_as_empty() {
    let now = now();
    let key = Keypair::generate_ed25519();
    let mut f = fields(now);
    f.sequence = 3;
    // value present, sequence absent: read as 0, which the signed 3 contradicts (as Go reads it).
    let mut entry = signed_v1_v2(&key, &f);
    entry.sequence = None;
    assert_eq!(
        check(&key, &entry, now),
        Err(ValidatorError::V1Mismatch(FIELD_SEQUENCE))
    );
    // No value and no signatureV1: absent V1 fields are simply absent.
    entry.value = None;
    entry.signature_v1 = None;
    assert!(check(&key, &entry, now).is_ok());
}

#[test]
fn a_v1_only_record_is_refused() {
    let now = now();
    let key = Keypair::generate_ed25519();
    let mut entry = signed_v1_v2(&key, &fields(now));
    entry.signature_v2 = None;
    entry.data = None;
    assert_eq!(check(&key, &entry, now), Err(ValidatorError::V1Only));
    assert_eq!(
        validate(&name_of(&key), b"", now),
        Err(ValidatorError::V1Only)
    );
}

#[test]
fn a_missing_or_empty_signature_v2_or_data_is_refused() {
    let now = now();
    let key = Keypair::generate_ed25519();
    let good = signed_v1_v2(&key, &fields(now));
    for sig in [None, Some(Vec::new())] {
        let mut entry = good.clone();
        entry.signature_v2 = sig;
        assert_eq!(
            check(&key, &entry, now),
            Err(ValidatorError::MissingSignatureV2)
        );
    }
    for data in [None, Some(Vec::new())] {
        let mut entry = good.clone();
        entry.data = data;
        assert_eq!(check(&key, &entry, now), Err(ValidatorError::MissingData));
    }
}

#[test]
fn an_expired_record_is_refused() {
    let now = now();
    let key = Keypair::generate_ed25519();
    let eol = now + MINUTE;
    let entry = signed_v2(&key, &Fields::new(eol));
    // Valid just before its end of life, refused at it and after.
    assert!(check(&key, &entry, eol - Duration::from_nanos(1)).is_ok());
    assert_eq!(check(&key, &entry, eol), Err(ValidatorError::Expired));
    assert_eq!(
        check(&key, &entry, eol + MINUTE),
        Err(ValidatorError::Expired)
    );
    let past = signed_v2(&key, &Fields::new(now - MINUTE));
    assert_eq!(check(&key, &past, now), Err(ValidatorError::Expired));
}

#[test]
fn a_record_over_the_size_limit_is_refused_before_parsing() {
    let now = now();
    let key = Keypair::generate_ed25519();
    let huge = vec![0xff; MAX_RECORD_SIZE + 1];
    assert_eq!(
        validate(&name_of(&key), &huge, now),
        Err(ValidatorError::TooLarge {
            size: MAX_RECORD_SIZE + 1,
            max: MAX_RECORD_SIZE
        })
    );
}

#[test]
fn garbage_protobuf_is_refused() {
    let now = now();
    let key = Keypair::generate_ed25519();
    let good = signed_v2(&key, &fields(now)).encode();
    let mut truncated = good.clone();
    truncated.truncate(good.len() - 1);
    let mut wrong_wire_type = Vec::new();
    pb_uint(&mut wrong_wire_type, 9, 1); // data as a varint
    for garbage in [
        b"\xff\xff\xff".to_vec(),
        b"not a protobuf".to_vec(),
        truncated,
        wrong_wire_type,
        vec![0x4b], // field 9, start group
    ] {
        assert!(
            matches!(
                validate(&name_of(&key), &garbage, now),
                Err(ValidatorError::MalformedRecord(_))
            ),
            "{garbage:02x?}"
        );
    }
}

#[test]
fn garbage_cbor_is_refused_even_when_signed() {
    let now = now();
    let key = Keypair::generate_ed25519();
    let f = fields(now);
    let mut trailing = f.cbor();
    trailing.push(0);
    let mut duplicate = f.entries();
    duplicate.push((FIELD_SEQUENCE, cbor_uint(9)));
    for data in [
        b"not cbor at all".to_vec(),
        vec![0x82, 0x01, 0x02], // an array, not a map
        trailing,
        cbor_map(&duplicate),
        f.cbor()[..f.cbor().len() - 1].to_vec(),
    ] {
        assert!(
            matches!(
                check(&key, &signed_data(&key, data.clone()), now),
                Err(ValidatorError::MalformedData(_))
            ),
            "{data:02x?}"
        );
    }
}

#[test]
fn missing_or_mistyped_data_fields_are_refused() {
    let now = now();
    let key = Keypair::generate_ed25519();
    let f = fields(now);
    for field in [
        FIELD_VALUE,
        FIELD_VALIDITY,
        FIELD_VALIDITY_TYPE,
        FIELD_SEQUENCE,
        FIELD_TTL,
    ] {
        let without: Vec<_> = f
            .entries()
            .into_iter()
            .filter(|(k, _)| *k != field)
            .collect();
        assert_eq!(
            check(&key, &signed_data(&key, cbor_map(&without)), now),
            Err(ValidatorError::MissingField(field))
        );
        // Each field as the other kind: text for the byte strings, bytes for the integers.
        let mistyped: Vec<_> = f
            .entries()
            .into_iter()
            .map(|(k, v)| match (k == field, v[0] >> 5) {
                (true, 2) => (k, cbor_text("text")),
                (true, _) => (k, cbor_bytes(b"\x01")),
                (false, _) => (k, v),
            })
            .collect();
        assert_eq!(
            check(&key, &signed_data(&key, cbor_map(&mistyped)), now),
            Err(ValidatorError::WrongFieldType(field))
        );
    }
    // A negative sequence is no uint64.
    let negative: Vec<_> = f
        .entries()
        .into_iter()
        .map(|(k, v)| {
            if k == FIELD_SEQUENCE {
                (k, vec![0x20])
            } else {
                (k, v)
            }
        })
        .collect();
    assert_eq!(
        check(&key, &signed_data(&key, cbor_map(&negative)), now),
        Err(ValidatorError::WrongFieldType(FIELD_SEQUENCE))
    );
}

#[test]
fn an_unknown_validity_type_is_refused() {
    let now = now();
    let key = Keypair::generate_ed25519();
    let mut f = fields(now);
    f.validity_type = 1;
    assert_eq!(
        check(&key, &signed_v2(&key, &f), now),
        Err(ValidatorError::UnknownValidityType(1))
    );
    // Its V1 copy agreeing changes nothing.
    assert_eq!(
        check(&key, &signed_v1_v2(&key, &f), now),
        Err(ValidatorError::UnknownValidityType(1))
    );
}

#[test]
fn a_validity_that_is_no_rfc3339_timestamp_is_refused() {
    let now = now();
    let key = Keypair::generate_ed25519();
    for validity in [
        &b""[..],
        b"tomorrow",
        b"2999-01-01",
        b"2999-01-01T00:00:00",      // no offset
        b"2999-13-01T00:00:00Z",     // month 13
        b"2999-01-01 00:00:00Z",     // space for T (Go refuses it)
        b"2999-01-01t00:00:00Z",     // lower-case t (Go refuses it)
        b"2999-01-01T00:00:00z",     // lower-case z (Go refuses it)
        b"1700000000",               // a Unix time
        b"2999-01-01T00:00:00Z\xff", // not UTF-8
    ] {
        let mut f = fields(now);
        f.validity = validity.to_vec();
        assert_eq!(
            check(&key, &signed_v2(&key, &f), now),
            Err(ValidatorError::InvalidValidity),
            "{}",
            String::from_utf8_lossy(validity)
        );
    }
}

// ---- selection ----------------------------------------------------------------------------------

#[test]
fn selection_prefers_the_higher_sequence_then_the_later_eol() {
    let now = now();
    let key = Keypair::generate_ed25519();
    let record = |sequence, eol_minutes| {
        let mut f = Fields::new(now + eol_minutes * MINUTE);
        f.sequence = sequence;
        signed_v2(&key, &f).encode()
    };
    let r1 = record(1, 60);
    let r2 = record(2, 10);
    let r2_later = record(2, 120);
    let r3 = record(3, 1);
    assert_eq!(
        select(&r2, &r1),
        Ordering::Greater,
        "sequence beats a later EOL"
    );
    assert_eq!(select(&r1, &r2), Ordering::Less);
    assert_eq!(
        select(&r2_later, &r2),
        Ordering::Greater,
        "same sequence: later EOL"
    );
    assert_eq!(select(&r3, &r2_later), Ordering::Greater);
    assert_eq!(select(&r1, &r1), Ordering::Equal);
    let best = [&r1, &r2, &r2_later, &r3]
        .into_iter()
        .max_by(|a, b| select(a, b))
        .expect("some");
    assert_eq!(best, &r3);
}

#[test]
fn selection_breaks_a_tie_on_the_bytes_and_is_antisymmetric() {
    let now = now();
    let key = Keypair::generate_ed25519();
    let eol = now + MINUTE;
    let mut a = Fields::new(eol);
    a.value = b"/ipfs/a".to_vec();
    let mut b = Fields::new(eol);
    b.value = b"/ipfs/b".to_vec();
    let (ra, rb) = (signed_v2(&key, &a).encode(), signed_v2(&key, &b).encode());
    assert_eq!(select(&ra, &rb), ra.cmp(&rb));
    assert_eq!(select(&rb, &ra), select(&ra, &rb).reverse());
    assert_ne!(select(&ra, &rb), Ordering::Equal);
}

#[test]
fn selection_puts_unparseable_records_last() {
    let now = now();
    let key = Keypair::generate_ed25519();
    let good = signed_v2(&key, &fields(now)).encode();
    let mut f = fields(now);
    f.validity = b"never".to_vec();
    let bad_validity = signed_v2(&key, &f).encode();
    for bad in [b"garbage".to_vec(), Vec::new(), bad_validity] {
        assert_eq!(select(&good, &bad), Ordering::Greater);
        assert_eq!(select(&bad, &good), Ordering::Less);
    }
    assert_eq!(select(b"a", b"b"), Ordering::Less);
}
