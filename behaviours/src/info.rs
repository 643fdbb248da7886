//! Read-only introspection: a peer asks, the node answers with a snapshot of itself. It is what a
//! debug node uses to gather the state of every node, and what cluster tests read from outside.

use std::io;

use futures::{AsyncRead, AsyncWrite};
use libp2p::StreamProtocol;
use libp2p::request_response::{self, Codec, ProtocolSupport};
use serde::{Deserialize, Serialize};

use crate::frame::{read_frame, write_frame};

/// The info protocol.
pub const INFO_PROTOCOL: StreamProtocol = StreamProtocol::new("/dht/info/1.0.0");
/// Largest info answer (a full routing table is far smaller).
pub const MAX_INFO_RESPONSE: usize = 1024 * 1024;

/// One routing-table peer as reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingPeer {
    /// Peer id.
    pub peer: String,
    /// Bucket index (log2 of the XOR distance).
    pub bucket: u32,
}

/// A node's account of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Peer id.
    pub peer_id: String,
    /// Agent version (`dht/<version>`).
    pub agent_version: String,
    /// Listen addresses with `/p2p/<id>`.
    pub listen_addrs: Vec<String>,
    /// Peers with an open connection.
    pub connected_peers: usize,
    /// The routing table.
    pub routing_table: Vec<RoutingPeer>,
    /// Records in the local store.
    pub stored_keys: usize,
    /// Bytes of keys and values in the local store.
    pub stored_bytes: usize,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Still joining: it has peers to join through and none in its routing table yet, so a
    /// store through it would reach only itself. (Absent from older nodes: read as false.)
    #[serde(default)]
    pub joining: bool,
}

/// Empty request; JSON answer.
#[derive(Debug, Clone, Copy, Default)]
pub struct InfoCodec;

impl Codec for InfoCodec {
    type Protocol = StreamProtocol;
    type Request = ();
    type Response = NodeInfo;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<()>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, 0).await.map(drop)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<NodeInfo>
    where
        T: AsyncRead + Unpin + Send,
    {
        let frame = read_frame(io, MAX_INFO_RESPONSE).await?;
        serde_json::from_slice(&frame).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, _: ()) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &[], 0).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: NodeInfo,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let bytes =
            serde_json::to_vec(&res).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        write_frame(io, &bytes, MAX_INFO_RESPONSE).await
    }
}

/// The info behaviour.
pub type InfoBehaviour = request_response::Behaviour<InfoCodec>;

/// Builds the info behaviour with the given deadline.
pub fn new_behaviour(timeout: std::time::Duration) -> InfoBehaviour {
    request_response::Behaviour::with_codec(
        InfoCodec,
        [(INFO_PROTOCOL, ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(timeout)
            .with_max_concurrent_streams(8),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use futures::io::Cursor;

    #[test]
    fn answers_round_trip_and_garbage_is_an_error() {
        let info = NodeInfo {
            peer_id: "p".into(),
            agent_version: "dht/0".into(),
            listen_addrs: vec!["/ip4/1.2.3.4/tcp/5".into()],
            connected_peers: 1,
            routing_table: vec![RoutingPeer {
                peer: "q".into(),
                bucket: 255,
            }],
            stored_keys: 2,
            stored_bytes: 3,
            uptime_secs: 4,
            joining: true,
        };
        let mut buf = Vec::new();
        block_on(InfoCodec.write_response(
            &INFO_PROTOCOL,
            &mut Cursor::new(&mut buf),
            info.clone(),
        ))
        .expect("write");
        assert_eq!(
            block_on(InfoCodec.read_response(&INFO_PROTOCOL, &mut Cursor::new(buf))).expect("read"),
            info
        );
        let junk = [0u8, 0, 0, 3, b'{', b'x', b'}'];
        assert!(
            block_on(InfoCodec.read_response(&INFO_PROTOCOL, &mut Cursor::new(junk.to_vec())))
                .is_err()
        );
        assert!(
            block_on(InfoCodec.read_request(&INFO_PROTOCOL, &mut Cursor::new(vec![0, 0, 0, 1, 9])))
                .is_err()
        );
    }
}
