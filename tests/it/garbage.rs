//! Malformed frames on every protocol a node speaks: it keeps serving, and blocks the sender.

use std::io;
use std::time::Duration;

use dht::Key;
use futures::{AsyncRead, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::StreamProtocol;
use libp2p::request_response::{self, Codec, ProtocolSupport};
use libp2p::swarm::SwarmEvent;

use crate::common::{addr_of, eventually, network, stop_all, tcp_swarm};

/// Writes the request bytes as they are and reads nothing back: a peer that speaks garbage.
#[derive(Clone, Default)]
struct Raw;

impl Codec for Raw {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = ();

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        _: &mut T,
    ) -> io::Result<Vec<u8>> {
        Err(io::Error::other("not served"))
    }
    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        _: &mut T,
    ) -> io::Result<()> {
        Ok(())
    }
    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()> {
        io.write_all(&req).await?;
        io.close().await
    }
    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        _: &mut T,
        _: (),
    ) -> io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_on_every_protocol_leave_the_node_serving_and_the_sender_blocked() {
    let nodes = network(3, 20).await;
    let target = &nodes[0];
    let stored = nodes[1]
        .store(b"served despite garbage".to_vec())
        .await
        .expect("store");

    let protocols = [
        "/ipfs/kad/1.0.0",
        "/dht/cmd/1.0.0",
        "/dht/broadcast/1.0.0",
        "/dht/info/1.0.0",
    ];
    let mut swarm = tcp_swarm(libp2p::identity::Keypair::generate_ed25519(), |_| {
        request_response::Behaviour::<Raw>::new(
            protocols
                .iter()
                .map(|p| (StreamProtocol::new(p), ProtocolSupport::Outbound)),
            request_response::Config::default().with_request_timeout(Duration::from_secs(5)),
        )
    });
    let garbage_id = *swarm.local_peer_id();
    swarm.dial(addr_of(target).await).expect("dial");
    let frames: Vec<Vec<u8>> = vec![
        vec![0xff; 64],                                // random bytes
        vec![0, 0, 0, 9, 1, 2],                        // truncated frame
        u32::MAX.to_be_bytes().to_vec(),               // over-long length prefix
        [&[0, 0, 0, 40][..], &[7u8; 40][..]].concat(), // a whole frame of invalid content
        vec![0x80, 0x80, 0x80, 0x80, 0x80, 0x01],      // a varint that never ends (kad)
    ];
    let target_id = target.peer_id();
    let mut sent = 0;
    let driver = async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::ConnectionEstablished { .. } if sent == 0 => {
                    for frame in &frames {
                        for _ in &protocols {
                            swarm
                                .behaviour_mut()
                                .send_request(&target_id, frame.clone());
                            sent += 1;
                        }
                    }
                }
                _ => {}
            }
        }
    };
    // Drive the garbage sender until the target blocks it; the target keeps serving meanwhile.
    tokio::select! {
        _ = driver => unreachable!("the driver never ends"),
        _ = eventually(Duration::from_secs(20), "the garbage sender to be blocked", || async {
            target.blocked().await.ok()?.iter().any(|b| b.peer == garbage_id).then_some(())
        }) => {}
    }
    assert_eq!(
        target.fetch(&stored.key).await.expect("fetch via target"),
        b"served despite garbage"
    );
    let fresh = target
        .store(b"stored after the garbage".to_vec())
        .await
        .expect("store");
    assert_eq!(
        nodes[2].fetch(&fresh.key).await.expect("fetch"),
        b"stored after the garbage"
    );
    assert!(nodes[2].fetch(&Key::for_value(b"absent")).await.is_err());
    assert_eq!(target.peer_count().await.expect("peers"), 2);
    stop_all(&nodes).await;
}
