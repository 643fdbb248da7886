//! Length-prefixed frames for our own sub-protocols: a 4-byte big-endian length, then the bytes.
//! The length is checked against the caller's limit before anything is allocated.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Reads one frame of at most `max` bytes.
pub async fn read_frame<T>(io: &mut T, max: usize) -> io::Result<Vec<u8>>
where
    T: AsyncRead + Unpin + Send,
{
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the limit of {max}"),
        ));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

/// Writes one frame, refusing to send more than `max` bytes (the peer would refuse it anyway).
pub async fn write_frame<T>(io: &mut T, bytes: &[u8], max: usize) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
{
    if bytes.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("frame of {} bytes exceeds the limit of {max}", bytes.len()),
        ));
    }
    let len = u32::try_from(bytes.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too long"))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(bytes).await?;
    io.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use futures::io::Cursor;

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        block_on(write_frame(&mut Cursor::new(&mut buf), b"hello", 16)).expect("write");
        let got = block_on(read_frame(&mut Cursor::new(buf), 16)).expect("read");
        assert_eq!(got, b"hello");
    }

    #[test]
    fn over_long_prefix_is_refused_before_allocating() {
        let bytes = u32::MAX.to_be_bytes().to_vec();
        let err = block_on(read_frame(&mut Cursor::new(bytes), 1024)).expect_err("too long");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn truncated_frame_is_an_error() {
        let mut bytes = 10u32.to_be_bytes().to_vec();
        bytes.extend_from_slice(b"abc");
        assert!(block_on(read_frame(&mut Cursor::new(bytes), 1024)).is_err());
    }

    #[test]
    fn oversize_write_is_refused() {
        let mut buf = Vec::new();
        assert!(block_on(write_frame(&mut Cursor::new(&mut buf), &[0; 17], 16)).is_err());
        assert!(buf.is_empty());
    }
}
