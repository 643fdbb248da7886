//! Kad streams that carry many requests. A peer's stream is served request after request, in
//! order, an ADD_PROVIDER taken and read on; a stream past its limits ends and nothing else does.
//! Our own requests reuse streams, and a server that answers once per stream (rust-libp2p's kad,
//! older builds of ours) costs a retry on a fresh stream, never a failure or a lost message.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dht::limits::DEFAULT_KAD_PROTOCOL;
use dht::{Dht, Multiaddr, PeerId, ProtocolConfig, Timing};
use dht_behaviours::config::KAD_MAX_PACKET_SIZE;
use dht_behaviours::kad::framing::{read_frame, write_message};
use dht_behaviours::kad::{self, MAX_INBOUND_KAD_STREAMS};
use dht_behaviours::kad_wire::{KadRequest, KadResponse, MessageKind, WirePeer};
use dht_behaviours::{DhtBehaviour, DhtBehaviourEvent};
use futures::{AsyncWriteExt, StreamExt};
use libp2p::identity::Keypair;
use libp2p::kad::{Record, RecordKey};
use libp2p::swarm::SwarmEvent;
use libp2p::{Stream, StreamProtocol, Swarm};

use crate::common::{addr_of, eventually, listen_locally, options, stream_peer, tcp_swarm};

const DEADLINE: Duration = Duration::from_secs(10);

fn kad_protocol() -> StreamProtocol {
    StreamProtocol::new(DEFAULT_KAD_PROTOCOL)
}

/// A bare peer connected to `node`, opening kad streams by hand.
struct RawPeer {
    id: PeerId,
    control: libp2p_stream::Control,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for RawPeer {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

async fn connect(node: &Dht) -> RawPeer {
    let key = Keypair::generate_ed25519();
    let id = key.public().to_peer_id();
    let (control, driver) = stream_peer(node, key).await;
    RawPeer {
        id,
        control,
        driver,
    }
}

impl RawPeer {
    async fn open(&self, node: &Dht) -> Stream {
        let mut control = self.control.clone();
        tokio::time::timeout(
            DEADLINE,
            control.open_stream(node.peer_id(), kad_protocol()),
        )
        .await
        .expect("opened in time")
        .expect("a kad stream")
    }
}

async fn send(s: &mut Stream, request: &KadRequest) {
    write_message(
        s,
        &request.encode(std::time::Instant::now()),
        KAD_MAX_PACKET_SIZE,
    )
    .await
    .expect("written");
}

/// The next answer on `s`; `None` when the node ended the stream (closed or reset).
async fn answer(s: &mut Stream) -> Option<KadResponse> {
    let frame = tokio::time::timeout(DEADLINE, read_frame(s, KAD_MAX_PACKET_SIZE))
        .await
        .expect("the node acted in time");
    match frame {
        Ok(Some(bytes)) => Some(
            KadResponse::decode(&bytes, std::time::Instant::now()).expect("a valid kad answer"),
        ),
        Ok(None) | Err(_) => None,
    }
}

fn record(key: &str, value: &str) -> Record {
    Record::new(RecordKey::new(&key), value.as_bytes().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stream_carries_ten_requests_of_mixed_kinds_answered_in_order() {
    let node = Dht::start(options(20)).await.expect("start");
    let peer = connect(&node).await;
    let mut s = peer.open(&node).await;
    let content = b"some content".to_vec();
    let provider = WirePeer {
        peer: peer.id,
        addrs: vec!["/ip4/127.0.0.1/tcp/4001".parse().expect("addr")],
    };
    let requests = vec![
        KadRequest::FindNode {
            key: PeerId::random().to_bytes(),
        },
        KadRequest::PutValue {
            record: record("/v/first", "one"),
        },
        KadRequest::GetValue {
            key: b"/v/first".to_vec(),
        },
        // No answer comes for this one: the node must take it and read on.
        KadRequest::AddProvider {
            key: content.clone(),
            providers: vec![provider.clone()],
        },
        KadRequest::GetProviders {
            key: content.clone(),
        },
        KadRequest::PutValue {
            record: record("/v/second", "two"),
        },
        KadRequest::GetValue {
            key: b"/v/second".to_vec(),
        },
        KadRequest::GetValue {
            key: b"/v/never-stored".to_vec(),
        },
        KadRequest::FindNode {
            key: PeerId::random().to_bytes(),
        },
        KadRequest::GetValue {
            key: b"/v/first".to_vec(),
        },
    ];
    // All ten written before any answer is read: the node answers them one after another.
    for r in &requests {
        send(&mut s, r).await;
    }
    let mut answers = Vec::new();
    for _ in 0..9 {
        let a = answer(&mut s).await;
        assert!(
            a.is_some(),
            "answer {} of 9 on the same stream; before it: {:?}",
            answers.len() + 1,
            answers
                .iter()
                .map(|a: &KadResponse| a.kind)
                .collect::<Vec<_>>()
        );
        answers.extend(a);
    }
    let kinds: Vec<MessageKind> = answers.iter().map(|a| a.kind).collect();
    let expected: Vec<MessageKind> = requests
        .iter()
        .map(KadRequest::kind)
        .filter(|k| *k != MessageKind::AddProvider)
        .collect();
    assert_eq!(kinds, expected, "answers in the order of the requests");
    let value = |a: &KadResponse| a.record.as_ref().map(|r| r.value.clone());
    assert_eq!(
        value(&answers[1]),
        Some(b"one".to_vec()),
        "PUT acknowledged"
    );
    assert_eq!(
        value(&answers[2]),
        Some(b"one".to_vec()),
        "the value just put"
    );
    assert!(
        answers[3].providers.iter().any(|p| p.peer == peer.id),
        "the ADD_PROVIDER sent mid-stream was taken: {:?}",
        answers[3].providers
    );
    assert_eq!(value(&answers[5]), Some(b"two".to_vec()));
    assert_eq!(value(&answers[6]), None, "nothing under a key never stored");
    assert_eq!(value(&answers[8]), Some(b"one".to_vec()));
    // Our side ends: the node ends its side too, with nothing more to say.
    s.close().await.expect("close");
    assert!(answer(&mut s).await.is_none(), "the stream ends cleanly");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_past_its_limits_ends_and_the_connection_serves_on() {
    let node = Dht::start(options(20)).await.expect("start");
    let peer = connect(&node).await;
    let find = KadRequest::FindNode {
        key: PeerId::random().to_bytes(),
    };

    // A message over the size limit: its length prefix alone ends the stream.
    let mut oversize = peer.open(&node).await;
    let mut prefix = Vec::new();
    let mut n = KAD_MAX_PACKET_SIZE + 1;
    while n >= 0x80 {
        prefix.push((n as u8) | 0x80);
        n >>= 7;
    }
    prefix.push(n as u8);
    oversize.write_all(&prefix).await.expect("write");
    oversize.flush().await.expect("flush");
    assert!(answer(&mut oversize).await.is_none(), "oversize: ended");

    // Bytes that are no kad message: the stream ends.
    let mut garbage = peer.open(&node).await;
    write_message(&mut garbage, &[0xff; 12], KAD_MAX_PACKET_SIZE)
        .await
        .expect("write");
    assert!(answer(&mut garbage).await.is_none(), "garbage: ended");

    // As many streams as a connection may hold, each answered; one more is refused.
    let mut open = Vec::new();
    for _ in 0..MAX_INBOUND_KAD_STREAMS {
        let mut s = peer.open(&node).await;
        send(&mut s, &find).await;
        assert!(answer(&mut s).await.is_some(), "a stream within the limit");
        open.push(s);
    }
    let mut extra = peer.open(&node).await;
    // The node may have reset it before the request goes out: the write may fail or not.
    let bytes = find.encode(std::time::Instant::now());
    let _ = write_message(&mut extra, &bytes, KAD_MAX_PACKET_SIZE).await;
    assert!(answer(&mut extra).await.is_none(), "one stream too many");

    // The connection and the streams within the limits serve on.
    for s in open.iter_mut() {
        send(s, &find).await;
        assert!(answer(s).await.is_some(), "an open stream still answers");
    }
    assert!(
        node.connected_peers()
            .await
            .expect("peers")
            .iter()
            .any(|e| e.peer == peer.id),
        "still connected"
    );
    drop(open);
    // A fresh stream is served once the others are gone (the node may not have seen them end
    // yet when the first try arrives).
    eventually(
        DEADLINE,
        "a new stream served after the others closed",
        || async {
            let mut again = peer.open(&node).await;
            let _ = write_message(&mut again, &bytes, KAD_MAX_PACKET_SIZE).await;
            answer(&mut again).await
        },
    )
    .await;
    node.stop().await;
}

/// A bare kad server: each stream's requests are recorded (the stream's number and the type);
/// every request but ADD_PROVIDER is answered with an empty answer of its type. With `once`, it
/// closes each stream after its first message, as servers that answer once per stream do.
async fn recording_server(
    once: bool,
) -> (PeerId, Multiaddr, Arc<Mutex<Vec<(usize, MessageKind)>>>) {
    let mut swarm = tcp_swarm(Keypair::generate_ed25519(), |_| {
        libp2p_stream::Behaviour::new()
    });
    let id = *swarm.local_peer_id();
    let mut incoming = swarm
        .behaviour()
        .new_control()
        .accept(kad_protocol())
        .expect("registered once");
    let addr = listen_locally(&mut swarm).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        let mut streams = 0;
        while let Some((_, mut s)) = incoming.next().await {
            let n = streams;
            streams += 1;
            let log = log.clone();
            tokio::spawn(async move {
                while let Ok(Some(bytes)) = read_frame(&mut s, KAD_MAX_PACKET_SIZE).await {
                    let Ok(request) = KadRequest::decode(&bytes, std::time::Instant::now()) else {
                        return;
                    };
                    log.lock().expect("log").push((n, request.kind()));
                    if request.kind() != MessageKind::AddProvider {
                        let reply =
                            KadResponse::to(request.kind()).encode(std::time::Instant::now());
                        if write_message(&mut s, &reply, KAD_MAX_PACKET_SIZE)
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    if once {
                        let _ = s.close().await;
                        return;
                    }
                }
            });
        }
    });
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    (id, addr, seen)
}

/// The server's log once it holds `n` requests.
async fn arrived(
    seen: &Arc<Mutex<Vec<(usize, MessageKind)>>>,
    n: usize,
) -> Vec<(usize, MessageKind)> {
    eventually(DEADLINE, "every request to reach the server", || async {
        let log = seen.lock().expect("log").clone();
        (log.len() >= n).then_some(log)
    })
    .await
}

/// Sends `requests` to `server` all at once; returns how many were answered and how many failed.
async fn ask_at_once(
    client: &mut Swarm<DhtBehaviour>,
    server: PeerId,
    addr: &Multiaddr,
    requests: &[KadRequest],
) -> (usize, usize) {
    let mut ids: std::collections::HashSet<_> = requests
        .iter()
        .map(|r| {
            client
                .behaviour_mut()
                .kad
                .send_request(&server, r.clone(), vec![addr.clone()])
        })
        .collect();
    let (mut answered, mut failed) = (0, 0);
    let outcomes = async {
        while !ids.is_empty() {
            match client.select_next_some().await {
                SwarmEvent::Behaviour(DhtBehaviourEvent::Kad(kad::Event::Response {
                    id, ..
                })) if ids.remove(&id) => answered += 1,
                SwarmEvent::Behaviour(DhtBehaviourEvent::Kad(kad::Event::Failure {
                    id, ..
                })) if ids.remove(&id) => failed += 1,
                _ => {}
            }
        }
    };
    tokio::time::timeout(DEADLINE, outcomes)
        .await
        .expect("every outcome");
    (answered, failed)
}

/// Sends `requests` to `server` one after another from a swarm with our protocols; returns how
/// many were answered and how many failed.
async fn ask_in_turn(
    client: &mut Swarm<DhtBehaviour>,
    server: PeerId,
    addr: &Multiaddr,
    requests: &[KadRequest],
) -> (usize, usize) {
    let (mut answered, mut failed) = (0, 0);
    for r in requests {
        let id = client
            .behaviour_mut()
            .kad
            .send_request(&server, r.clone(), vec![addr.clone()]);
        let outcome = async {
            loop {
                match client.select_next_some().await {
                    SwarmEvent::Behaviour(DhtBehaviourEvent::Kad(kad::Event::Response {
                        id: got,
                        ..
                    })) if got == id => return true,
                    SwarmEvent::Behaviour(DhtBehaviourEvent::Kad(kad::Event::Failure {
                        id: got,
                        ..
                    })) if got == id => return false,
                    _ => {}
                }
            }
        };
        if tokio::time::timeout(DEADLINE, outcome)
            .await
            .expect("an outcome")
        {
            answered += 1;
        } else {
            failed += 1;
        }
    }
    (answered, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_requests_reuse_a_stream_and_a_server_that_answers_once_costs_retries_not_failures() {
    let config = ProtocolConfig {
        timing: Timing::fast(),
        ..ProtocolConfig::default()
    };
    let mut requests = Vec::new();
    for i in 0..5 {
        requests.push(KadRequest::GetValue {
            key: format!("/v/{i}").into_bytes(),
        });
        requests.push(KadRequest::AddProvider {
            key: format!("content {i}").into_bytes(),
            providers: Vec::new(),
        });
    }

    // A server that keeps streams: ten requests in turn ride one stream.
    let (id, addr, seen) = recording_server(false).await;
    let mut client = tcp_swarm(Keypair::generate_ed25519(), |k| {
        DhtBehaviour::new(k, &config)
    });
    let gets: Vec<KadRequest> = (0..10)
        .map(|i| KadRequest::GetValue {
            key: format!("/v/{i}").into_bytes(),
        })
        .collect();
    assert_eq!(ask_in_turn(&mut client, id, &addr, &gets).await, (10, 0));
    let streams = |log: &[(usize, MessageKind)]| {
        log.iter()
            .map(|(n, _)| *n)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    let log = seen.lock().expect("log").clone();
    assert_eq!(log.len(), 10, "every request arrived once: {log:?}");
    assert_eq!(streams(&log), 1, "one stream for ten requests: {log:?}");
    // Each ADD_PROVIDER takes a stream of its own (no answer would tell that a reused stream
    // had been closed under it), which then serves what follows.
    seen.lock().expect("log").clear();
    assert_eq!(
        ask_in_turn(&mut client, id, &addr, &requests).await,
        (10, 0)
    );
    // An ADD_PROVIDER ends, for its sender, once written: the server reads it a moment later.
    let log = arrived(&seen, requests.len()).await;
    assert_eq!(
        streams(&log),
        1 + 5,
        "the open stream, and a new one per ADD_PROVIDER only: {log:?}"
    );

    // A server that closes each stream after one message: every request still arrives once,
    // ADD_PROVIDERs included, and none fails.
    let (id, addr, seen) = recording_server(true).await;
    let mut client = tcp_swarm(Keypair::generate_ed25519(), |k| {
        DhtBehaviour::new(k, &config)
    });
    let (answered, failed) = ask_in_turn(&mut client, id, &addr, &requests).await;
    assert_eq!(
        (answered, failed),
        (10, 0),
        "no failure against a close-after-one server"
    );
    let log = arrived(&seen, requests.len()).await;
    let kinds: Vec<MessageKind> = log.iter().map(|(_, k)| *k).collect();
    let sent: Vec<MessageKind> = requests.iter().map(KadRequest::kind).collect();
    assert_eq!(kinds, sent, "each request arrived, once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_burst_fills_every_stream_a_provide_takes_the_place_of_an_idle_one() {
    let node = Dht::start(options(20)).await.expect("start");
    let addr = addr_of(&node).await;
    let config = ProtocolConfig {
        timing: Timing::fast(),
        ..ProtocolConfig::default()
    };
    let mut client = tcp_swarm(Keypair::generate_ed25519(), |k| {
        DhtBehaviour::new(k, &config)
    });
    let me = *client.local_peer_id();
    // As many requests at once as a connection has streams: every stream is open, then idle.
    let burst: Vec<KadRequest> = (0..kad::MAX_OUTBOUND_KAD_STREAMS)
        .map(|i| KadRequest::GetValue {
            key: format!("/v/burst/{i}").into_bytes(),
        })
        .collect();
    let server = node.peer_id();
    assert_eq!(
        ask_at_once(&mut client, server, &addr, &burst).await,
        (burst.len(), 0)
    );
    // An ADD_PROVIDER needs a stream of its own: it takes an idle one's place at once rather than
    // wait past its deadline for one to age out.
    let content = b"provided after the burst".to_vec();
    let provide = [
        KadRequest::AddProvider {
            key: content.clone(),
            providers: vec![WirePeer {
                peer: me,
                addrs: vec!["/ip4/127.0.0.1/tcp/4001".parse().expect("addr")],
            }],
        },
        KadRequest::GetProviders { key: content },
    ];
    assert_eq!(
        ask_in_turn(&mut client, server, &addr, &provide[..1]).await,
        (1, 0),
        "the ADD_PROVIDER went out"
    );
    // It went on a stream of its own: the check, on another, may arrive first. Asked again
    // until the node lists the provider.
    let mut listed = false;
    for _ in 0..100 {
        let check = client.behaviour_mut().kad.send_request(
            &server,
            provide[1].clone(),
            vec![addr.clone()],
        );
        let answer = async {
            loop {
                match client.select_next_some().await {
                    SwarmEvent::Behaviour(DhtBehaviourEvent::Kad(kad::Event::Response {
                        id,
                        response,
                        ..
                    })) if id == check => return Some(response),
                    SwarmEvent::Behaviour(DhtBehaviourEvent::Kad(kad::Event::Failure {
                        id,
                        ..
                    })) if id == check => return None,
                    _ => {}
                }
            }
        };
        let response = tokio::time::timeout(DEADLINE, answer)
            .await
            .expect("an outcome")
            .expect("GET_PROVIDERS answered");
        if response.providers.iter().any(|p| p.peer == me) {
            listed = true;
            break;
        }
        tokio::time::sleep(crate::common::POLL).await;
    }
    assert!(listed, "the node lists the provider");
    node.stop().await;
}

/// Sends each pair of `pairs` to `server` (the second right behind the first on one stream) and
/// waits for both outcomes, one pair after another. Returns how many were answered and how many
/// failed, and whether every first came out before its second.
async fn ask_pairs(
    client: &mut Swarm<DhtBehaviour>,
    server: PeerId,
    addr: &Multiaddr,
    pairs: &[(KadRequest, KadRequest)],
) -> (usize, usize, bool) {
    let (mut answered, mut failed, mut in_order) = (0, 0, true);
    for (first, then) in pairs {
        let (a, b) = client.behaviour_mut().kad.send_pair(
            &server,
            (first.clone(), true),
            then.clone(),
            vec![addr.clone()],
        );
        let mut order = Vec::new();
        let outcomes = async {
            while order.len() < 2 {
                let (id, ok) = match client.select_next_some().await {
                    SwarmEvent::Behaviour(DhtBehaviourEvent::Kad(kad::Event::Response {
                        id,
                        ..
                    })) => (id, true),
                    SwarmEvent::Behaviour(DhtBehaviourEvent::Kad(kad::Event::Failure {
                        id,
                        ..
                    })) => (id, false),
                    _ => continue,
                };
                if id == a || id == b {
                    order.push(id);
                    if ok {
                        answered += 1;
                    } else {
                        failed += 1;
                    }
                }
            }
        };
        tokio::time::timeout(DEADLINE, outcomes)
            .await
            .expect("both outcomes");
        in_order &= order == [a, b];
    }
    (answered, failed, in_order)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_rides_behind_its_put_and_a_server_that_answers_once_gets_it_on_a_new_stream() {
    let config = ProtocolConfig {
        timing: Timing::fast(),
        ..ProtocolConfig::default()
    };
    let pairs: Vec<(KadRequest, KadRequest)> = (0..5)
        .map(|i| {
            let key = format!("/v/pair/{i}").into_bytes();
            (
                KadRequest::PutValue {
                    record: Record::new(RecordKey::new(&key), b"value".to_vec()),
                },
                KadRequest::GetValue { key },
            )
        })
        .collect();
    let sent: Vec<MessageKind> = pairs
        .iter()
        .flat_map(|(a, b)| [a.kind(), b.kind()])
        .collect();
    for once in [false, true] {
        let (id, addr, seen) = recording_server(once).await;
        let mut client = tcp_swarm(Keypair::generate_ed25519(), |k| {
            DhtBehaviour::new(k, &config)
        });
        let (answered, failed, in_order) = ask_pairs(&mut client, id, &addr, &pairs).await;
        assert_eq!((answered, failed), (10, 0), "once: {once}");
        assert!(
            in_order,
            "each PUT's outcome before its check's (once: {once})"
        );
        let log = arrived(&seen, sent.len()).await;
        let kinds: Vec<MessageKind> = log.iter().map(|(_, k)| *k).collect();
        assert_eq!(kinds, sent, "each request once, each check after its PUT");
        let streams: std::collections::BTreeSet<usize> = log.iter().map(|(n, _)| *n).collect();
        if once {
            // Each check was never read where it was written, and went again on its own.
            assert_eq!(streams.len(), sent.len(), "{log:?}");
        } else {
            assert_eq!(streams.len(), 1, "ten requests, one stream: {log:?}");
        }
    }
}
