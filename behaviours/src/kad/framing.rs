//! Kad's framing: each message a protobuf behind its unsigned-varint length, at most a limit's
//! bytes. Streams carry one message after another, so a reader tells a stream the peer ended
//! between messages (no more requests) from one cut inside a message (an error).

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::kad_wire::{invalid, put_varint};

/// Bytes reserved for a message before any of it arrived; the rest grows as bytes come, so a
/// length prefix alone (a peer may claim the whole limit on every stream and send nothing)
/// reserves little.
pub const PREALLOCATE_LIMIT: usize = 16 * 1024;

/// Reads one message of at most `max` bytes; `None` when the stream ended before its first byte.
pub async fn read_frame<T>(io: &mut T, max: usize) -> io::Result<Option<Vec<u8>>>
where
    T: AsyncRead + Unpin + Send,
{
    let mut len = 0usize;
    for i in 0..5 {
        let mut b = [0u8; 1];
        if io.read(&mut b).await? == 0 {
            if i == 0 {
                return Ok(None);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "kad length prefix cut short",
            ));
        }
        len |= usize::from(b[0] & 0x7f) << (7 * i);
        if b[0] & 0x80 == 0 {
            if len > max {
                return Err(invalid("kad message over the size limit"));
            }
            let mut buf = Vec::with_capacity(len.min(PREALLOCATE_LIMIT));
            (&mut *io).take(len as u64).read_to_end(&mut buf).await?;
            if buf.len() < len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "kad message cut short",
                ));
            }
            return Ok(Some(buf));
        }
    }
    Err(invalid("length prefix too long"))
}

/// Reads one message of at most `max` bytes; a stream that ended first is an error.
pub async fn read_message<T>(io: &mut T, max: usize) -> io::Result<Vec<u8>>
where
    T: AsyncRead + Unpin + Send,
{
    read_frame(io, max).await?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the stream ended before a kad message",
        )
    })
}

/// Writes one message and flushes it, refusing more than `max` bytes.
pub async fn write_message<T>(io: &mut T, bytes: &[u8], max: usize) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
{
    write_messages(io, &[bytes], max).await
}

/// Writes messages one after another and flushes them once, refusing any of more than `max`
/// bytes before writing anything.
pub async fn write_messages<T>(io: &mut T, messages: &[&[u8]], max: usize) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
{
    if messages.iter().any(|m| m.len() > max) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "kad message over the size limit",
        ));
    }
    // One write for every prefix and body: one frame of the muxer, one record of the secure
    // channel, one wake-up of the reader.
    let total = messages.iter().map(|m| m.len() + 5).sum();
    let mut framed = Vec::with_capacity(total);
    for m in messages {
        put_varint(&mut framed, m.len() as u64);
        framed.extend_from_slice(m);
    }
    io.write_all(&framed).await?;
    io.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KAD_MAX_PACKET_SIZE;
    use futures::executor::block_on;
    use futures::io::Cursor;

    #[test]
    fn framing_refuses_oversize_prefixes_before_allocating() {
        let mut buf = Vec::new();
        put_varint(&mut buf, (KAD_MAX_PACKET_SIZE + 1) as u64);
        let err = block_on(read_message(&mut Cursor::new(buf), KAD_MAX_PACKET_SIZE))
            .expect_err("too long");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn messages_follow_one_another_and_a_clean_end_is_not_an_error() {
        let mut out = Vec::new();
        let mut w = Cursor::new(&mut out);
        block_on(write_message(&mut w, b"hello", 16)).expect("write");
        block_on(write_message(&mut w, b"again", 16)).expect("write");
        let mut r = Cursor::new(out.clone());
        assert_eq!(
            block_on(read_frame(&mut r, 16)).expect("1"),
            Some(b"hello".to_vec())
        );
        assert_eq!(
            block_on(read_frame(&mut r, 16)).expect("2"),
            Some(b"again".to_vec())
        );
        assert_eq!(block_on(read_frame(&mut r, 16)).expect("end"), None);
        // Cut inside the second message: an error, not an end.
        let mut cut = Cursor::new(out[..out.len() - 2].to_vec());
        block_on(read_frame(&mut cut, 16)).expect("1");
        let err = block_on(read_frame(&mut cut, 16)).expect_err("cut");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
