//! Stream adapters between the futures I/O traits and hyper's.

use futures_lite::{AsyncRead, AsyncWrite};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

/// Most bytes one `poll_read` through [`FuturesIo`] asks for: a TLS record is 16 KiB.
const MAX_READ_BYTES: usize = 32 * 1024;
/// Fewest: what a request or a small answer takes.
const MIN_READ_BYTES: usize = 4 * 1024;

/// A futures stream seen through hyper's I/O traits.
#[derive(Debug)]
pub struct FuturesIo<T> {
    inner: T,
    /// Bytes the next read asks for: twice the last read's, within the bounds above.
    read_size: usize,
}

impl<T> FuturesIo<T> {
    /// `inner` as hyper sees a stream.
    pub fn new(inner: T) -> Self {
        FuturesIo {
            inner,
            read_size: MIN_READ_BYTES,
        }
    }
}

impl<T: AsyncRead + Unpin> hyper::rt::Read for FuturesIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        #[allow(unsafe_code)]
        // SAFETY: the first `len` bytes are written (zeroed) before they are viewed as `[u8]`,
        // and `advance(n)` only covers the `n <= len` bytes the reader reported as filled.
        unsafe {
            let uninit = buf.as_mut();
            // hyper hands out its whole spare capacity (up to hundreds of KB) and does not
            // remember what was initialised, so each read zeroes what it offers, even a read
            // that finds nothing. Offering what the stream has been delivering keeps that
            // small for requests and grows to MAX_READ_BYTES within a few reads of a bulk
            // transfer.
            let len = uninit.len().min(self.read_size);
            std::ptr::write_bytes(uninit.as_mut_ptr(), 0, len);
            let slice = std::slice::from_raw_parts_mut(uninit.as_mut_ptr().cast::<u8>(), len);
            let n = ready!(Pin::new(&mut self.inner).poll_read(cx, slice))?;
            buf.advance(n);
            self.read_size = (2 * n).clamp(MIN_READ_BYTES, MAX_READ_BYTES);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> hyper::rt::Write for FuturesIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// A hyper stream (such as `hyper::upgrade::Upgraded`) seen through the futures I/O traits.
#[derive(Debug)]
pub struct HyperIo<T>(pub T);

impl<T: hyper::rt::Read + Unpin> AsyncRead for HyperIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut read_buf = hyper::rt::ReadBuf::new(buf);
        ready!(Pin::new(&mut self.0).poll_read(cx, read_buf.unfilled()))?;
        Poll::Ready(Ok(read_buf.filled().len()))
    }
}

impl<T: hyper::rt::Write + Unpin> AsyncWrite for HyperIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
