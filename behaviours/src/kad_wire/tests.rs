use super::*;

fn peer(addrs: usize) -> WirePeer {
    WirePeer {
        peer: PeerId::random(),
        addrs: (0..addrs)
            .map(|i| format!("/ip4/10.0.0.{i}/tcp/4001").parse().expect("addr"))
            .collect(),
    }
}

#[test]
fn answers_round_trip() {
    let now = Instant::now();
    let mut record = Record::new(RecordKey::new(&b"key"), b"value".to_vec());
    record.publisher = Some(PeerId::random());
    record.expires = Some(now + Duration::from_secs(90));
    let answer = KadResponse {
        record: Some(record.clone()),
        closer: vec![peer(0), peer(2)],
        ..Default::default()
    };
    let back = KadResponse::decode(&answer.encode(now), now).expect("decode");
    assert_eq!(back.closer, answer.closer);
    let got = back.record.expect("record");
    assert_eq!(
        (got.key, got.value, got.publisher),
        (record.key, record.value, record.publisher)
    );
    assert_eq!(got.expires, Some(now + Duration::from_secs(90)));
}

#[test]
fn peers_written_in_place_read_back_whatever_their_length() {
    let now = Instant::now();
    // From no address to enough that a peer's length prefix takes two bytes (8 addresses of
    // 13 bytes and an identity: past 127).
    let closer: Vec<WirePeer> = (0..=MAX_ADDRS_PER_PEER).map(peer).collect();
    let answer = KadResponse {
        closer: closer.clone(),
        providers: vec![peer(1)],
        ..Default::default()
    };
    let back = KadResponse::decode(&answer.encode(now), now).expect("decode");
    assert_eq!((back.closer, back.providers), (closer, answer.providers));
    for n in [0u64, 1, 127, 128, 16_383, 16_384, u64::MAX] {
        let mut buf = Vec::new();
        put_varint(&mut buf, n);
        assert_eq!(varint_len(n), buf.len(), "{n}");
    }
}

#[test]
fn a_dying_record_is_sent_with_one_second_not_forever() {
    let now = Instant::now();
    let mut record = Record::new(RecordKey::new(&b"k"), vec![1]);
    record.expires = Some(now + Duration::from_millis(300));
    let answer = KadResponse {
        record: Some(record),
        ..Default::default()
    };
    let back = KadResponse::decode(&answer.encode(now), now).expect("decode");
    assert_eq!(
        back.record.and_then(|r| r.expires),
        Some(now + Duration::from_secs(1))
    );
}

#[test]
fn peers_and_addresses_are_bounded() {
    let now = Instant::now();
    let answer = KadResponse {
        closer: (0..MAX_PEERS_DECODED + 10)
            .map(|_| peer(MAX_ADDRS_PER_PEER + 3))
            .collect(),
        ..Default::default()
    };
    let back = KadResponse::decode(&answer.encode(now), now).expect("decode");
    assert_eq!(back.closer.len(), MAX_PEERS_DECODED);
    assert_eq!(back.dropped, 10);
    assert!(
        back.closer
            .iter()
            .all(|p| p.addrs.len() == MAX_ADDRS_PER_PEER)
    );
}

#[test]
fn malformed_answers_are_errors_and_bad_peers_are_skipped() {
    let now = Instant::now();
    assert!(KadResponse::decode(&[0x1a, 0x05, 1], now).is_err()); // truncated record
    assert!(KadResponse::decode(&[0x0b], now).is_err()); // wire type 3
    assert!(KadResponse::decode(&[0xff; 11], now).is_err()); // over-long varint
    let mut bad_peer = Vec::new();
    put_bytes(&mut bad_peer, 1, b"not a peer id");
    let mut msg = Vec::new();
    put_bytes(&mut msg, 8, &bad_peer);
    let back = KadResponse::decode(&msg, now).expect("decode");
    assert!(back.closer.is_empty());
    assert_eq!(back.dropped, 1);
}

#[test]
fn requests_round_trip_with_their_types() {
    let now = Instant::now();
    let mut record = Record::new(RecordKey::new(&b"key"), b"value".to_vec());
    record.expires = Some(now + Duration::from_secs(60));
    let requests = [
        KadRequest::FindNode { key: vec![] },
        KadRequest::GetValue { key: b"k".to_vec() },
        KadRequest::PutValue { record },
        KadRequest::GetProviders { key: b"k".to_vec() },
        KadRequest::AddProvider {
            key: b"k".to_vec(),
            providers: vec![peer(1)],
        },
        KadRequest::Ping,
    ];
    for request in requests {
        let back = KadRequest::decode(&request.encode(now), now).expect("decode");
        assert_eq!(back, request);
    }
}

#[test]
fn bad_requests_are_refused_and_unknown_types_told_apart() {
    let now = Instant::now();
    let mut msg = Vec::new();
    put_uint(&mut msg, 1, 9);
    let err = KadRequest::decode(&msg, now).expect_err("type 9");
    assert_eq!(err.kind(), io::ErrorKind::Unsupported);
    let mut msg = Vec::new();
    put_uint(&mut msg, 1, 1);
    put_bytes(&mut msg, 2, &[7; MAX_KEY_SIZE + 1]);
    let err = KadRequest::decode(&msg, now).expect_err("long key");
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    // A PUT_VALUE (type 0, the default) without its record.
    let err = KadRequest::decode(&[], now).expect_err("no record");
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
}

#[test]
fn answers_carry_the_type_of_the_request() {
    let now = Instant::now();
    for kind in [
        MessageKind::PutValue,
        MessageKind::GetProviders,
        MessageKind::Ping,
    ] {
        let mut answer = KadResponse::to(kind);
        answer.providers = vec![peer(1)];
        let back = KadResponse::decode(&answer.encode(now), now).expect("decode");
        assert_eq!(back, answer);
    }
}
