//! Restarts with a data directory: the same peer id, unexpired records and provider records back
//! (with their original expiry), expired ones never resurrected; and the loss without one, made
//! explicit.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dht::limits::DEFAULT_KAD_PROTOCOL;
use dht::{Dht, DhtOptions, Error, Key, Multiaddr, PeerId, Timing};
use dht_behaviours::kad_wire::{KadRequest, KadResponse, WirePeer};
use futures::future::join_all;
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::StreamProtocol;
use tokio::time::Instant;

use crate::common::{addr_of, eventually, holds, stop_all, stream_peer, wait_routed};

const K: usize = 3;

/// Short enough that a copy whose publisher left expires during the test.
fn timing() -> Timing {
    Timing {
        query_timeout: Duration::from_secs(5),
        replication_interval: Duration::from_secs(3),
        record_ttl: Duration::from_secs(15),
        ..Timing::fast()
    }
}

fn options(dir: Option<&Path>) -> DhtOptions {
    crate::common::log_if_asked();
    let o = DhtOptions::default()
        .listen_on(["/ip4/127.0.0.1/tcp/0".parse().expect("addr")])
        .timing(timing())
        .replication_factor(NonZeroUsize::new(K).expect("k"));
    match dir {
        Some(d) => o.data_dir(d),
        None => o,
    }
}

/// A fresh directory for this test run.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dht-it-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

async fn start(dir: &Path, boot: Option<Multiaddr>) -> Dht {
    let mut o = options(Some(dir));
    if let Some(b) = boot {
        o = o.bootstrap(b);
    }
    Dht::start(o).await.expect("start")
}

/// Every key fetchable from every node, within `within`.
async fn all_fetchable(nodes: &[Dht], keys: &[Key], within: Duration, what: &str) {
    let last = std::sync::Mutex::new(Vec::new());
    let fetched = tokio::time::timeout(
        within,
        eventually(within * 2, what, || async {
            for n in nodes {
                let results = join_all(keys.iter().map(|k| n.fetch(k))).await;
                let errors: Vec<String> = results
                    .iter()
                    .filter_map(|r| r.as_ref().err().map(ToString::to_string))
                    .collect();
                if !errors.is_empty() {
                    *last.lock().expect("errors") = errors;
                    return None;
                }
            }
            Some(())
        }),
    )
    .await;
    assert!(
        fetched.is_ok(),
        "timed out after {within:?} waiting for {what}; the last round's errors: {:?}",
        last.lock().expect("errors")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_with_data_dirs_keep_ids_and_unexpired_records_and_drop_expired_ones() {
    let root = scratch("restart");
    let dirs: Vec<PathBuf> = (0..5).map(|i| root.join(i.to_string())).collect();
    let mut nodes = vec![start(&dirs[0], None).await];
    let boot = addr_of(&nodes[0]).await;
    for d in &dirs[1..] {
        nodes.push(start(d, Some(boot.clone())).await);
    }
    wait_routed(&nodes, 4).await;
    let ids: Vec<PeerId> = nodes.iter().map(Dht::peer_id).collect();

    let mut keys = Vec::new();
    for i in 0..20 {
        let stored = nodes[i % 5]
            .store(format!("durable value {i}").into_bytes())
            .await
            .expect("store");
        keys.push(stored.key);
    }
    // A value whose publisher keeps no data dir and leaves for good: its copies must expire.
    let orphan_publisher = Dht::start(options(None).bootstrap(boot.clone()))
        .await
        .expect("start");
    wait_routed(std::slice::from_ref(&orphan_publisher), 5).await;
    let orphan = orphan_publisher
        .store(b"nobody republishes me".to_vec())
        .await
        .expect("store")
        .key;
    orphan_publisher.stop().await;
    let orphan_gone_by = Instant::now() + timing().record_ttl;

    // Restart one node that holds the orphan, after the orphan's copies have expired.
    let mut holder = None;
    for (i, n) in nodes.iter().enumerate() {
        if holds(n, &orphan).await {
            holder = Some(i);
            break;
        }
    }
    let h = holder.expect("some node holds the orphan");
    nodes[h].stop().await;
    tokio::time::sleep_until(orphan_gone_by + Duration::from_secs(1)).await;
    let boot = addr_of(&nodes[(h + 1) % 5]).await;
    let restarted = start(&dirs[h], Some(boot)).await;
    assert_eq!(restarted.peer_id(), ids[h], "same peer id after a restart");
    // Loaded from disk before it talks to anyone: its own values are there, the expired one not.
    let local = restarted.local_records().await.expect("records");
    assert!(
        !local.iter().any(|r| r.key == orphan),
        "an expired record was resurrected"
    );
    for (i, key) in keys.iter().enumerate() {
        if i % 5 == h {
            let r = local
                .iter()
                .find(|r| r.key == *key)
                .expect("its own published value reloaded");
            assert!(r.published_here, "reloaded as published here");
        }
    }
    nodes[h] = restarted;
    let restarted_at = Instant::now();
    all_fetchable(
        &nodes[h..=h],
        &keys,
        Duration::from_secs(15),
        "every value from the restarted node",
    )
    .await;
    println!(
        "one node restarted: every value fetchable from it after {:?}",
        restarted_at.elapsed()
    );
    assert!(matches!(
        nodes[h].fetch(&orphan).await,
        Err(Error::NotFound(_))
    ));

    // Now the whole network at once.
    stop_all(&nodes).await;
    let mut again = vec![start(&dirs[0], None).await];
    let boot = addr_of(&again[0]).await;
    for d in &dirs[1..] {
        again.push(start(d, Some(boot.clone())).await);
    }
    let restarted_at = Instant::now();
    let same: Vec<PeerId> = again.iter().map(Dht::peer_id).collect();
    assert_eq!(same, ids, "every node keeps its peer id");
    wait_routed(&again, 4).await;
    all_fetchable(
        &again,
        &keys,
        Duration::from_secs(30),
        "every value from every node after a full restart",
    )
    .await;
    println!(
        "full restart: every value fetchable from every node after {:?}",
        restarted_at.elapsed()
    );
    for n in &again {
        assert!(!holds(n, &orphan).await);
    }
    stop_all(&again).await;
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_data_dir_a_restart_loses_the_identity_and_the_records() {
    let first = Dht::start(options(None)).await.expect("start");
    let id = first.peer_id();
    first
        .store(b"in memory only".to_vec())
        .await
        .expect("store");
    assert_eq!(first.key_count().await.expect("count"), 1);
    first.stop().await;
    let second = Dht::start(options(None)).await.expect("start");
    assert_ne!(second.peer_id(), id);
    assert_eq!(second.key_count().await.expect("count"), 0);
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_holds_every_record_stored_in_its_network() {
    // The operator chooses the mirror and its feeders: their identities are known before the
    // network starts.
    let mirror_key = libp2p::identity::Keypair::generate_ed25519();
    let mirror_id = mirror_key.public().to_peer_id();
    let feeder_keys: Vec<_> = (0..8)
        .map(|_| libp2p::identity::Keypair::generate_ed25519())
        .collect();
    let next_key = std::sync::Mutex::new(feeder_keys.clone().into_iter());
    let mut nodes = crate::common::network_with(8, || {
        let key = next_key
            .lock()
            .expect("keys")
            .next()
            .expect("a key per node");
        options(None).mirror_peer(mirror_id).keypair(key)
    })
    .await;
    let mut keys = Vec::new();
    // Records stored before the mirror exists reach it when nodes see it...
    for i in 0..30 {
        keys.push(
            nodes[i % 8]
                .store(format!("before the mirror {i}").into_bytes())
                .await
                .expect("store")
                .key,
        );
    }
    let boot = addr_of(&nodes[0]).await;
    let mut mirror_options = options(None)
        .keypair(mirror_key)
        .mirror(true)
        .bootstrap(boot);
    for key in &feeder_keys {
        mirror_options = mirror_options.mirror_feeder(key.public().to_peer_id());
    }
    let mirror = Dht::start(mirror_options).await.expect("start mirror");
    nodes.push(mirror.clone());
    wait_routed(&nodes, 8).await;
    // ...and records stored after it, as they are stored.
    for i in 0..30 {
        keys.push(
            nodes[i % 8]
                .store(format!("after the mirror {i}").into_bytes())
                .await
                .expect("store")
                .key,
        );
    }
    eventually(
        Duration::from_secs(20),
        "the mirror to hold every record",
        || async {
            let held = mirror.local_records().await.ok()?;
            keys.iter()
                .all(|k| held.iter().any(|r| r.key == *k))
                .then_some(())
        },
    )
    .await;
    // A TTL later the mirror still holds them all: it is refreshed as holders are, while the
    // records live (their publishers are up). Each check is at one moment: the expiry margin
    // hides a copy a few seconds before its expiry, so a lapse between refreshes would show.
    let ttl = timing().record_ttl;
    let until = Instant::now() + ttl;
    while Instant::now() < until {
        let held = mirror.local_records().await.expect("records");
        let missing = keys
            .iter()
            .filter(|k| !held.iter().any(|r| r.key == **k))
            .count();
        assert_eq!(missing, 0, "the mirror lost records a TTL on");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // With k = 3 among 9 nodes, an ordinary node holds about a third of them.
    let counts = join_all(nodes[..8].iter().map(Dht::key_count)).await;
    let most = counts.into_iter().map(|c| c.expect("count")).max();
    assert!(
        most < Some(keys.len()),
        "an ordinary node holds every record too: the test proves nothing"
    );
    assert!(
        mirror
            .status()
            .await
            .expect("status")
            .counters
            .records_refused
            == 0
    );
    // A node its operator did not name a feeder pushes its records in vain: none is taken
    // (failed before: a mirror took anyone's pushes, outside every share).
    let via_mirror = addr_of(&mirror).await;
    let stranger = Dht::start(options(None).mirror_peer(mirror_id).bootstrap(via_mirror))
        .await
        .expect("start stranger");
    for i in 0..5 {
        stranger
            .store(format!("from a stranger {i}").into_bytes())
            .await
            .expect("store");
    }
    eventually(
        Duration::from_secs(20),
        "the mirror to refuse the stranger's pushes",
        || async {
            let c = mirror.status().await.ok()?.counters;
            (c.mirror_pushes_refused >= 5).then_some(())
        },
    )
    .await;
    nodes.push(stranger);
    stop_all(&nodes).await;
}

/// A provider record lives this long in the provider test: short enough to see one expire while
/// its node is down.
const PROVIDER_TTL: Duration = Duration::from_secs(15);

/// Sends `request` to `node` as the bare peer `key` (not a `dht` node: a swarm that opens one kad
/// stream), and reads the answer when one is `expected`; without one, waits for the node to
/// close the stream, which it does once it has handled the request.
async fn kad_request(
    node: &Dht,
    key: libp2p::identity::Keypair,
    request: KadRequest,
    expected: bool,
) -> Option<KadResponse> {
    let (mut control, driver) = stream_peer(node, key).await;
    let exchange = async {
        let mut s = control
            .open_stream(node.peer_id(), StreamProtocol::new(DEFAULT_KAD_PROTOCOL))
            .await
            .expect("kad stream");
        let message = request.encode(std::time::Instant::now());
        let mut framed = unsigned_varint::encode::usize_buffer();
        let mut bytes = unsigned_varint::encode::usize(message.len(), &mut framed).to_vec();
        bytes.extend_from_slice(&message);
        s.write_all(&bytes).await.expect("write");
        // Our side ends after this one request: the node answers it (or not), reads on, finds
        // the end and closes its side in turn, so the end of the stream means it was handled.
        s.close().await.expect("close");
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer).await;
        if !expected {
            return None;
        }
        let (len, rest) = unsigned_varint::decode::usize(&answer).expect("a framed answer");
        assert_eq!(rest.len(), len, "one whole answer");
        Some(KadResponse::decode(rest, std::time::Instant::now()).expect("an answer"))
    };
    let answer = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("the node handled the request");
    driver.abort();
    answer
}

/// Announces the bare peer `key` to `node` as a provider of `content`, at `addr`.
async fn announce(node: &Dht, key: &libp2p::identity::Keypair, content: &[u8], addr: &Multiaddr) {
    let request = KadRequest::AddProvider {
        key: content.to_vec(),
        providers: vec![WirePeer {
            peer: key.public().to_peer_id(),
            addrs: vec![addr.clone()],
        }],
    };
    kad_request(node, key.clone(), request, false).await;
}

/// The providers of `content` `node` lists.
async fn providers_listed(node: &Dht, content: &[u8]) -> Vec<WirePeer> {
    let request = KadRequest::GetProviders {
        key: content.to_vec(),
    };
    let asker = libp2p::identity::Keypair::generate_ed25519();
    kad_request(node, asker, request, true)
        .await
        .expect("an answer")
        .providers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_records_survive_a_restart_and_expired_ones_do_not() {
    let dir = scratch("providers");
    let provider_timing = Timing {
        provider_ttl: PROVIDER_TTL,
        provide_interval: Duration::from_secs(3),
        ..timing()
    };
    let options = || options(Some(&dir)).timing(provider_timing.clone());
    let node = Dht::start(options()).await.expect("start");
    let (early, late) = (
        libp2p::identity::Keypair::generate_ed25519(),
        libp2p::identity::Keypair::generate_ed25519(),
    );
    let addr: Multiaddr = "/ip4/192.0.2.7/tcp/4001".parse().expect("addr");
    // One announcement that will have expired by the restart, and one that will still live.
    let announced_early = Instant::now();
    announce(&node, &early, b"expires while down", &addr).await;
    tokio::time::sleep(PROVIDER_TTL / 2).await;
    announce(&node, &late, b"outlives the restart", &addr).await;
    let listed = providers_listed(&node, b"outlives the restart").await;
    assert_eq!(listed.len(), 1, "listed before the restart");
    node.stop().await;

    tokio::time::sleep_until(announced_early + PROVIDER_TTL + Duration::from_secs(1)).await;
    let node = Dht::start(options()).await.expect("restart");
    let listed = providers_listed(&node, b"outlives the restart").await;
    assert_eq!(
        listed,
        vec![WirePeer {
            peer: late.public().to_peer_id(),
            addrs: vec![addr],
        }],
        "the live provider record is back, with its address"
    );
    assert!(
        providers_listed(&node, b"expires while down")
            .await
            .is_empty(),
        "an expired provider record was resurrected"
    );
    node.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_in_amino_mode_drops_the_free_keys_it_kept_and_keeps_signed_ones() {
    let dir = scratch("amino-restart");
    let node = Dht::start(options(Some(&dir))).await.expect("start");
    let free = Key::parse("/v/free key").expect("key");
    node.store_at(&free, b"anything".to_vec())
        .await
        .expect("a free key is kept without --amino");
    let published = node
        .publish_ipns(b"/ipfs/kept", dht::ipns::PublishOptions::default())
        .await
        .expect("publish");
    let name = published.name.key();
    node.stop().await;

    let amino = Dht::start(options(Some(&dir)).amino().timing(timing()))
        .await
        .expect("restart in Amino mode");
    assert!(!holds(&amino, &free).await, "a free key is not loaded");
    assert!(holds(&amino, &name).await, "a valid IPNS record is");
    // The dropped row is gone from the data directory, not merely skipped.
    amino.stop().await;
    let again = Dht::start(options(Some(&dir))).await.expect("restart");
    assert!(!holds(&again, &free).await);
    assert!(holds(&again, &name).await);
    again.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
