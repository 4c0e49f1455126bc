//! TLS the non-strict TDS way: during the handshake, TLS records travel
//! inside PRELOGIN (0x12) packets in both directions; once it completes, raw
//! TLS records carry the TDS packets. [`PreloginTls`] is the server side of
//! that wrapping, placed between the socket and rustls.

use std::{
    io,
    pin::Pin,
    task::{ready, Context, Poll},
};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::packet::{put_header, PacketHeader, PacketType, HEADER_LEN};

/// Largest PRELOGIN packet this side writes during the handshake.
const HANDSHAKE_PACKET: usize = 4096;

/// Wraps handshake bytes in PRELOGIN packets until the handshake is over
/// ([`handshake_done`](PreloginTls::handshake_done), or the first raw TLS
/// record from the client), then passes bytes through.
#[derive(Debug)]
pub struct PreloginTls<S> {
    inner: S,
    handshaking: bool,
    header: [u8; HEADER_LEN],
    header_filled: usize,
    /// Payload bytes of the current incoming packet not yet handed to rustls.
    remaining: usize,
    /// Raw TLS bytes read while still expecting PRELOGIN framing.
    pushback: Vec<u8>,
    out: BytesMut,
    /// Bytes of `out` already framed and being written.
    framed: BytesMut,
}

impl<S> PreloginTls<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            handshaking: true,
            header: [0; HEADER_LEN],
            header_filled: 0,
            remaining: 0,
            pushback: Vec::new(),
            out: BytesMut::new(),
            framed: BytesMut::new(),
        }
    }

    /// Switches to passing raw TLS records through.
    pub fn handshake_done(&mut self) {
        self.handshaking = false;
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for PreloginTls<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.handshaking {
            if !this.pushback.is_empty() {
                let n = this.pushback.len().min(buf.remaining());
                buf.put_slice(&this.pushback[..n]);
                this.pushback.drain(..n);
                return Poll::Ready(Ok(()));
            }
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        while this.remaining == 0 {
            // Read the next PRELOGIN packet header.
            while this.header_filled < HEADER_LEN {
                let mut header_buf = ReadBuf::new(&mut this.header[this.header_filled..]);
                ready!(Pin::new(&mut this.inner).poll_read(cx, &mut header_buf))?;
                let n = header_buf.filled().len();
                if n == 0 {
                    return Poll::Ready(Ok(())); // EOF
                }
                this.header_filled += n;
            }
            this.header_filled = 0;
            let header = PacketHeader::parse(&this.header)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            if header.ty != PacketType::PreLogin {
                if (0x14..=0x17).contains(&this.header[0]) {
                    // A raw TLS record: the client finished its handshake and
                    // moved on while rustls was still polling for input after
                    // the last handshake record. Keep the bytes for the TLS
                    // stream, pass through from now on, and report "no data
                    // yet" so the handshake returns.
                    this.pushback.extend_from_slice(&this.header);
                    this.handshaking = false;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "expected a PRELOGIN packet during the TLS handshake",
                )));
            }
            this.remaining = header.payload_len();
        }
        let mut chunk = [0u8; HANDSHAKE_PACKET];
        let max = this.remaining.min(buf.remaining()).min(chunk.len());
        let mut limited = ReadBuf::new(&mut chunk[..max]);
        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut limited))?;
        let n = limited.filled().len();
        buf.put_slice(&chunk[..n]);
        this.remaining -= n;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PreloginTls<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !this.handshaking {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        this.out.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.handshaking && !this.out.is_empty() {
            // Everything buffered since the last flush becomes PRELOGIN packets.
            let data = this.out.split();
            let chunks: Vec<&[u8]> = data.chunks(HANDSHAKE_PACKET - HEADER_LEN).collect();
            let count = chunks.len();
            for (i, chunk) in chunks.into_iter().enumerate() {
                put_header(
                    &mut this.framed,
                    PacketType::PreLogin,
                    i + 1 == count,
                    chunk.len(),
                    1,
                );
                this.framed.extend_from_slice(chunk);
            }
        }
        while !this.framed.is_empty() {
            let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &this.framed))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            let _ = this.framed.split_to(n);
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
