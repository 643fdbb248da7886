//! The custom-command sub-protocol: a peer sends an opaque payload, the receiving node's handler
//! answers with a payload or refuses with a reason. Both directions are size-capped.

use std::io;

use futures::{AsyncRead, AsyncWrite};
use libp2p::StreamProtocol;
use libp2p::request_response::{self, Codec, ProtocolSupport};

use crate::config::{
    COMMAND_PROTOCOL, MAX_COMMAND_REPLY, MAX_COMMAND_REQUEST, MAX_COMMAND_STREAMS,
};
use crate::frame::{read_frame, write_frame};

/// Longest refusal reason carried on the wire.
pub const MAX_REFUSAL_LEN: usize = 1024;

const STATUS_OK: u8 = 0;
const STATUS_REFUSED: u8 = 1;

/// The answer to a custom command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandReply {
    /// The handler's answer.
    Ok(Vec<u8>),
    /// The handler refused, with a reason for humans.
    Refused(String),
}

/// Encodes requests and replies as length-prefixed frames; replies carry a status byte first.
#[derive(Debug, Clone, Copy, Default)]
pub struct CommandCodec;

impl Codec for CommandCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = CommandReply;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, MAX_COMMAND_REQUEST).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<CommandReply>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut frame = read_frame(io, MAX_COMMAND_REPLY + 1).await?;
        let Some((&status, _)) = frame.split_first() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "empty command reply",
            ));
        };
        frame.remove(0);
        match status {
            STATUS_OK => Ok(CommandReply::Ok(frame)),
            STATUS_REFUSED if frame.len() <= MAX_REFUSAL_LEN => Ok(CommandReply::Refused(
                String::from_utf8_lossy(&frame).into_owned(),
            )),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "malformed command reply",
            )),
        }
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &req, MAX_COMMAND_REQUEST).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: CommandReply,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let frame = encode_reply(res);
        write_frame(io, &frame, MAX_COMMAND_REPLY + 1).await
    }
}

fn encode_reply(reply: CommandReply) -> Vec<u8> {
    match reply {
        CommandReply::Ok(payload) => {
            let mut frame = Vec::with_capacity(payload.len() + 1);
            frame.push(STATUS_OK);
            frame.extend_from_slice(&payload);
            frame
        }
        CommandReply::Refused(reason) => {
            let mut end = reason.len().min(MAX_REFUSAL_LEN);
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            let mut frame = Vec::with_capacity(end + 1);
            frame.push(STATUS_REFUSED);
            frame.extend_from_slice(&reason.as_bytes()[..end]);
            frame
        }
    }
}

/// The custom-command behaviour.
pub type CommandBehaviour = request_response::Behaviour<CommandCodec>;

/// Builds the custom-command behaviour with the given request deadline.
pub fn new_behaviour(timeout: std::time::Duration) -> CommandBehaviour {
    request_response::Behaviour::with_codec(
        CommandCodec,
        [(COMMAND_PROTOCOL, ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(timeout)
            .with_max_concurrent_streams(MAX_COMMAND_STREAMS),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use futures::io::Cursor;

    fn round_trip(reply: CommandReply) -> io::Result<CommandReply> {
        let mut buf = Vec::new();
        block_on(CommandCodec.write_response(
            &COMMAND_PROTOCOL,
            &mut Cursor::new(&mut buf),
            reply,
        ))?;
        block_on(CommandCodec.read_response(&COMMAND_PROTOCOL, &mut Cursor::new(buf)))
    }

    #[test]
    fn replies_round_trip() {
        let ok = CommandReply::Ok(b"pong".to_vec());
        assert_eq!(round_trip(ok.clone()).expect("ok"), ok);
        let no = CommandReply::Refused("no handler".into());
        assert_eq!(round_trip(no.clone()).expect("refused"), no);
    }

    #[test]
    fn long_refusals_are_cut_on_a_char_boundary() {
        let reason = "é".repeat(MAX_REFUSAL_LEN);
        match round_trip(CommandReply::Refused(reason)).expect("refused") {
            CommandReply::Refused(r) => assert!(r.len() <= MAX_REFUSAL_LEN && !r.is_empty()),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn garbage_replies_are_errors() {
        for bytes in [vec![], vec![0, 0, 0, 0], vec![0, 0, 0, 1, 9]] {
            let got =
                block_on(CommandCodec.read_response(&COMMAND_PROTOCOL, &mut Cursor::new(bytes)));
            assert!(got.is_err());
        }
    }

    #[test]
    fn oversize_request_is_refused_on_both_sides() {
        let big = vec![0u8; MAX_COMMAND_REQUEST + 1];
        let mut buf = Vec::new();
        assert!(
            block_on(CommandCodec.write_request(
                &COMMAND_PROTOCOL,
                &mut Cursor::new(&mut buf),
                big
            ))
            .is_err()
        );
        let prefix = ((MAX_COMMAND_REQUEST + 1) as u32).to_be_bytes().to_vec();
        assert!(
            block_on(CommandCodec.read_request(&COMMAND_PROTOCOL, &mut Cursor::new(prefix)))
                .is_err()
        );
    }
}
