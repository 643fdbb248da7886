//! Bad input from the network: the node keeps serving everyone else.

use dht::Key;
use rand::RngCore;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::common::{addr_of, holders, network, stop_all, tcp_port};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_silent_connections_do_not_stop_service() {
    let nodes = network(4, 20).await;
    let target = &nodes[1];
    let port = tcp_port(&addr_of(target).await);

    // Half-open connections that never speak, and connections that send garbage.
    let mut silent = Vec::new();
    for _ in 0..5 {
        silent.push(
            TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect"),
        );
    }
    let mut noisy = Vec::new();
    for size in [0usize, 1, 7, 64, 4096, 100_000] {
        let mut s = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let mut junk = vec![0u8; size];
        rand::thread_rng().fill_bytes(&mut junk);
        let _ = s.write_all(&junk).await;
        noisy.push(s);
    }
    // A plausible multistream header followed by junk.
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let _ = s
        .write_all(b"\x13/multistream/1.0.0\n\x07/noise\n\xff\xff\xff\xff")
        .await;
    noisy.push(s);

    // The target still stores and serves.
    let stored = nodes[0]
        .store(b"still alive".to_vec())
        .await
        .expect("store");
    assert_eq!(
        target.fetch(&stored.key).await.expect("fetch via target"),
        b"still alive"
    );
    let own = target
        .store(b"from the target".to_vec())
        .await
        .expect("store from target");
    // Four nodes, k = 20: every other node keeps a copy, and the count is of copies held.
    assert_eq!(own.remote, 3, "{own:?}");
    assert_eq!(holders(&nodes, &own.key).await, own.nodes);
    for n in &nodes {
        assert_eq!(n.fetch(&own.key).await.expect("fetch"), b"from the target");
    }
    let status = target.status().await.expect("status");
    assert!(status.connected_peers >= 3, "lost peers: {status:?}");
    drop((silent, noisy));
    assert!(nodes[2].fetch(&Key::for_value(b"absent")).await.is_err());
    stop_all(&nodes).await;
}
