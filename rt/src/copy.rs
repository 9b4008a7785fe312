//! Copying between two streams in both directions.

use futures_lite::{future, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use std::io;

/// The buffer an idle connection holds per direction.
const FIRST_BUFFER_BYTES: usize = 1024;
/// The buffer a busy one grows to.
const COPY_BUFFER_BYTES: usize = 32 * 1024;

/// Copy `reader` into `writer` until EOF, flushing after every write (so interactive
/// protocols and server-sent events are not held back), then close the writer's send side.
pub async fn copy_one_way<R, W>(mut reader: R, mut writer: W) -> io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // Most proxied connections sit idle (WebSockets, keep-alive): start small, and grow
    // only when a read fills the buffer.
    let mut buf = vec![0u8; FIRST_BUFFER_BYTES];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            writer.close().await?;
            return Ok(total);
        }
        writer.write_all(&buf[..n]).await?;
        writer.flush().await?;
        total += n as u64;
        if n == buf.len() && buf.len() < COPY_BUFFER_BYTES {
            buf.resize(COPY_BUFFER_BYTES, 0);
        }
    }
}

/// Copy both ways until both directions reached EOF or either failed. Returns bytes
/// (a → b, b → a).
pub async fn copy_bidirectional<A, B>(a: A, b: B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (a_read, a_write) = futures_lite::io::split(a);
    let (b_read, b_write) = futures_lite::io::split(b);
    future::try_zip(copy_one_way(a_read, b_write), copy_one_way(b_read, a_write)).await
}
