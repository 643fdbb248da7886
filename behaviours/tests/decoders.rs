//! Property-based fuzzing of every decoder that reads bytes from the network: random bytes and
//! mutated valid frames never panic, never allocate past the limits, and valid frames round-trip.
//! `PROPTEST_CASES=1000000 cargo test -p dht-behaviours --test decoders --release` runs it long.

use dht_behaviours::broadcast::{Ack, BroadcastCodec, BroadcastMessage, MAX_BROADCAST_FRAME};
use dht_behaviours::command::{CommandCodec, CommandReply};
use dht_behaviours::config::KAD_MAX_PACKET_SIZE;
use dht_behaviours::config::{BROADCAST_PROTOCOL, COMMAND_PROTOCOL, MAX_COMMAND_REQUEST};
use dht_behaviours::frame::read_frame;
use dht_behaviours::info::{INFO_PROTOCOL, InfoCodec};
use dht_behaviours::kad::framing::{read_frame as read_kad_frame, read_message, write_message};
use dht_behaviours::kad_wire::{KadRequest, KadResponse, WirePeer};
use dht_behaviours::mirror::{MIRROR_PROTOCOL, MirrorCodec, MirrorRecord};
use dht_behaviours::validation::validate_record;
use futures::executor::block_on;
use futures::io::Cursor;
use libp2p::kad::{Record, RecordKey};
use libp2p::request_response::Codec;
use libp2p::{Multiaddr, PeerId};
use proptest::prelude::*;

/// A frame as our sub-protocols send it, with `body` inside.
fn framed(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

fn any_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..4096)
}

proptest! {
    #[test]
    fn frames_never_panic(bytes in any_bytes(), max in 0usize..8192) {
        if let Ok(frame) = block_on(read_frame(&mut Cursor::new(bytes.clone()), max)) {
            prop_assert!(frame.len() <= max);
            prop_assert_eq!(&bytes[4..4 + frame.len()], &frame[..]);
        }
    }

    #[test]
    fn command_requests_and_replies_never_panic(bytes in any_bytes()) {
        let _ = block_on(CommandCodec.read_request(&COMMAND_PROTOCOL, &mut Cursor::new(bytes.clone())));
        let _ = block_on(CommandCodec.read_response(&COMMAND_PROTOCOL, &mut Cursor::new(bytes.clone())));
        // The same bytes as the body of a well-formed frame.
        let _ = block_on(CommandCodec.read_response(&COMMAND_PROTOCOL, &mut Cursor::new(framed(&bytes))));
    }

    #[test]
    fn command_frames_round_trip(payload in any_bytes(), refused in any::<bool>()) {
        let reply = if refused {
            CommandReply::Refused(String::from_utf8_lossy(&payload).chars().take(64).collect())
        } else {
            CommandReply::Ok(payload.clone())
        };
        let mut buf = Vec::new();
        block_on(CommandCodec.write_response(&COMMAND_PROTOCOL, &mut Cursor::new(&mut buf), reply.clone())).expect("write");
        prop_assert_eq!(block_on(CommandCodec.read_response(&COMMAND_PROTOCOL, &mut Cursor::new(buf))).expect("read"), reply);
        prop_assume!(payload.len() <= MAX_COMMAND_REQUEST);
        let mut buf = Vec::new();
        block_on(CommandCodec.write_request(&COMMAND_PROTOCOL, &mut Cursor::new(&mut buf), payload.clone())).expect("write");
        prop_assert_eq!(block_on(CommandCodec.read_request(&COMMAND_PROTOCOL, &mut Cursor::new(buf))).expect("read"), payload);
    }

    #[test]
    fn broadcast_frames_never_panic(bytes in any_bytes()) {
        let _ = BroadcastMessage::decode(&bytes);
        let _ = block_on(BroadcastCodec.read_request(&BROADCAST_PROTOCOL, &mut Cursor::new(framed(&bytes))));
        let _ = block_on(BroadcastCodec.read_response(&BROADCAST_PROTOCOL, &mut Cursor::new(bytes)));
    }

    #[test]
    fn broadcast_messages_round_trip_and_survive_mutation(
        payload in prop::collection::vec(any::<u8>(), 0..2048),
        height in 0u16..=256,
        flip in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let key = libp2p::identity::Keypair::generate_ed25519();
        let msg = BroadcastMessage::originate(&key, 1_800_000_000_000, [7; 16], payload).expect("sign").with_height(height);
        let mut buf = Vec::new();
        block_on(BroadcastCodec.write_request(&BROADCAST_PROTOCOL, &mut Cursor::new(&mut buf), msg.clone())).expect("write");
        prop_assert!(buf.len() <= MAX_BROADCAST_FRAME + 4);
        prop_assert_eq!(block_on(BroadcastCodec.read_request(&BROADCAST_PROTOCOL, &mut Cursor::new(buf.clone()))).expect("read"), msg.clone());
        // One byte changed anywhere: refused, or decoded as the same message at another height,
        // or decoded as one whose signature does not hold; never a panic.
        let i = flip.index(buf.len());
        buf[i] = byte;
        if let Ok(decoded) = block_on(BroadcastCodec.read_request(&BROADCAST_PROTOCOL, &mut Cursor::new(buf))) {
            prop_assert!(decoded == msg.with_height(decoded.height) || decoded.verify().is_err());
        }
        let mut ack = Vec::new();
        block_on(BroadcastCodec.write_response(&BROADCAST_PROTOCOL, &mut Cursor::new(&mut ack), Ack::Duplicate)).expect("ack");
        prop_assert_eq!(block_on(BroadcastCodec.read_response(&BROADCAST_PROTOCOL, &mut Cursor::new(ack))).expect("ack"), Ack::Duplicate);
    }

    #[test]
    fn info_answers_never_panic(bytes in any_bytes()) {
        let _ = block_on(InfoCodec.read_response(&INFO_PROTOCOL, &mut Cursor::new(framed(&bytes))));
        let _ = block_on(InfoCodec.read_request(&INFO_PROTOCOL, &mut Cursor::new(bytes)));
    }

    #[test]
    fn kad_answers_never_panic_and_round_trip(
        bytes in any_bytes(),
        key in prop::collection::vec(any::<u8>(), 1..=256),
        value in any_bytes(),
        peers in 0usize..40,
        ttl in 0u64..100_000,
        flip in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let now = std::time::Instant::now();
        let _ = KadResponse::decode(&bytes, now);
        if let Ok(Some(frame)) = block_on(read_kad_frame(&mut Cursor::new(bytes), KAD_MAX_PACKET_SIZE)) {
            let _ = KadResponse::decode(&frame, now);
        }
        let mut record = Record::new(RecordKey::new(&key), value);
        record.expires = (ttl > 0).then(|| now + std::time::Duration::from_secs(ttl));
        let addr: Multiaddr = "/ip4/10.1.2.3/tcp/4001".parse().expect("addr");
        let answer = KadResponse {
            record: Some(record),
            closer: (0..peers).map(|_| WirePeer { peer: PeerId::random(), addrs: vec![addr.clone()] }).collect(),
            ..Default::default()
        };
        let mut buf = answer.encode(now);
        let back = KadResponse::decode(&buf, now).expect("a valid answer decodes");
        prop_assert_eq!(&back.closer, &answer.closer);
        prop_assert_eq!(back.record.map(|r| r.value), answer.record.map(|r| r.value));
        // One byte changed anywhere: decoded or refused, never a panic, never more than the caps.
        let i = flip.index(buf.len());
        buf[i] = byte;
        if let Ok(mutated) = KadResponse::decode(&buf, now) {
            prop_assert!(mutated.closer.len() <= dht_behaviours::kad_wire::MAX_PEERS_DECODED);
        }
    }

    #[test]
    fn kad_requests_never_panic_and_round_trip(
        bytes in any_bytes(),
        key in prop::collection::vec(any::<u8>(), 1..=256),
        value in any_bytes(),
        flip in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let now = std::time::Instant::now();
        let _ = KadRequest::decode(&bytes, now);
        if let Ok(Some(frame)) = block_on(read_kad_frame(&mut Cursor::new(bytes), KAD_MAX_PACKET_SIZE)) {
            let _ = KadRequest::decode(&frame, now);
        }
        let request = KadRequest::PutValue { record: Record::new(RecordKey::new(&key), value) };
        let mut buf = Vec::new();
        block_on(write_message(&mut Cursor::new(&mut buf), &request.encode(now), KAD_MAX_PACKET_SIZE)).expect("write");
        let frame = block_on(read_message(&mut Cursor::new(buf.clone()), KAD_MAX_PACKET_SIZE)).expect("read");
        prop_assert_eq!(KadRequest::decode(&frame, now).expect("decodes"), request);
        // One byte changed anywhere: decoded or refused, never a panic.
        let i = flip.index(buf.len());
        buf[i] = byte;
        if let Ok(frame) = block_on(read_message(&mut Cursor::new(buf), KAD_MAX_PACKET_SIZE)) {
            let _ = KadRequest::decode(&frame, now);
        }
    }

    #[test]
    fn record_validation_never_panics(key in prop::collection::vec(any::<u8>(), 0..300), value in any_bytes()) {
        let _ = validate_record(&key, &value);
    }

    #[test]
    fn mirror_records_never_panic_and_round_trip(
        bytes in any_bytes(),
        key in prop::collection::vec(any::<u8>(), 1..=256),
        value in any_bytes(),
        ms in any::<u64>(),
        flip in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let _ = MirrorRecord::decode(&bytes);
        let _ = block_on(MirrorCodec.read_request(&MIRROR_PROTOCOL, &mut Cursor::new(framed(&bytes))));
        let _ = block_on(MirrorCodec.read_response(&MIRROR_PROTOCOL, &mut Cursor::new(bytes)));
        let record = MirrorRecord { key, value, expires_in: std::time::Duration::from_millis(ms) };
        let mut buf = Vec::new();
        block_on(MirrorCodec.write_request(&MIRROR_PROTOCOL, &mut Cursor::new(&mut buf), record.clone())).expect("write");
        prop_assert_eq!(block_on(MirrorCodec.read_request(&MIRROR_PROTOCOL, &mut Cursor::new(buf.clone()))).expect("read"), record);
        let i = flip.index(buf.len());
        buf[i] = byte;
        let _ = block_on(MirrorCodec.read_request(&MIRROR_PROTOCOL, &mut Cursor::new(buf)));
    }
}
