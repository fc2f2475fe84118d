//! The stream under a link: plain TCP, TLS between our roles (cargo feature `tls`), or an
//! in-process end (roles of one process, [`crate::link::memory`]).
//!
//! Plain TCP reads through readiness and a stack buffer, so an idle link holds no read buffer
//! (memory per idle connection is a published benchmark); TLS keeps rustls's buffers.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWrite;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// A TLS handshake that takes longer than this fails.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(feature = "tls")]
type Tls = tokio_rustls::TlsStream<TcpStream>;

/// The stream a link is served on.
#[derive(Debug)]
#[non_exhaustive]
pub enum LinkStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// An accepted connection whose TLS handshake (client certificate required) is still to
    /// be made; [`crate::link::serve`] makes it on the link's own task.
    #[cfg(feature = "tls")]
    TlsPending(TcpStream, crate::tls::TlsAcceptor),
    /// TLS, handshake done.
    #[cfg(feature = "tls")]
    Tls(Box<Tls>),
    /// One end of an in-process link ([`crate::link::memory`]): frames handed over in memory.
    Memory(crate::link::memory::MemoryEnd),
}

impl From<TcpStream> for LinkStream {
    fn from(stream: TcpStream) -> LinkStream {
        LinkStream::Plain(stream)
    }
}

impl LinkStream {
    /// Makes a pending handshake (boxed: the state is large, and only handshaking links pay
    /// for it).
    pub(crate) async fn established(self) -> io::Result<LinkStream> {
        match self {
            #[cfg(feature = "tls")]
            LinkStream::TlsPending(stream, acceptor) => {
                let _ = stream.set_nodelay(true);
                let accept = Box::pin(tokio::time::timeout(
                    TLS_HANDSHAKE_TIMEOUT,
                    acceptor.0.accept(stream),
                ));
                match accept.await {
                    Ok(Ok(tls)) => Ok(LinkStream::Tls(Box::new(Tls::Server(tls)))),
                    Ok(Err(error)) => Err(error),
                    Err(_) => Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "TLS handshake timed out",
                    )),
                }
            }
            other => Ok(other),
        }
    }

    /// Makes the TLS handshake of a dialing role on `stream` (connected to the server at `ip`),
    /// with [`TLS_HANDSHAKE_TIMEOUT`].
    #[cfg(feature = "tls")]
    pub async fn connect_tls(
        stream: TcpStream,
        ip: std::net::IpAddr,
        connector: &crate::tls::TlsConnector,
    ) -> io::Result<LinkStream> {
        let _ = stream.set_nodelay(true);
        let name = connector.server_name(ip);
        let connect = Box::pin(tokio::time::timeout(
            TLS_HANDSHAKE_TIMEOUT,
            connector.inner.connect(name, stream),
        ));
        match connect.await {
            Ok(Ok(tls)) => Ok(LinkStream::Tls(Box::new(Tls::Client(tls)))),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "TLS handshake timed out",
            )),
        }
    }

    /// The read and write halves. A pending handshake must have been made
    /// ([`LinkStream::established`]); if not, the halves fail at once.
    pub(crate) fn split(self) -> (LinkReader, LinkWriter) {
        match self {
            LinkStream::Plain(stream) => {
                let _ = stream.set_nodelay(true);
                let (reader, writer) = stream.into_split();
                (LinkReader::Plain(reader), LinkWriter::Plain(writer))
            }
            #[cfg(feature = "tls")]
            LinkStream::Tls(tls) => {
                let (reader, writer) = tokio::io::split(*tls);
                (
                    LinkReader::Tls(reader),
                    LinkWriter::Tls {
                        half: writer,
                        unflushed: false,
                    },
                )
            }
            #[cfg(feature = "tls")]
            LinkStream::TlsPending(..) => (LinkReader::Failed, LinkWriter::Failed),
            // Served by the in-process link task, never as bytes.
            LinkStream::Memory(_) => (LinkReader::Failed, LinkWriter::Failed),
        }
    }
}

/// The read half of a [`LinkStream`].
#[derive(Debug)]
pub(crate) enum LinkReader {
    Plain(OwnedReadHalf),
    #[cfg(feature = "tls")]
    Tls(tokio::io::ReadHalf<Tls>),
    /// A stream that is not read or written here (a pending handshake, an in-process end).
    Failed,
}

impl LinkReader {
    /// Appends what the stream has to `buf`; `Ok(0)`: the peer closed. Cancel-safe (nothing is
    /// kept between polls).
    pub(crate) fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        match self {
            LinkReader::Plain(reader) => loop {
                ready!(reader.as_ref().poll_read_ready(cx))?;
                match crate::link::read_into(reader, buf) {
                    // A spurious wake-up: readiness is cleared, wait again.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    other => return Poll::Ready(other),
                }
            },
            #[cfg(feature = "tls")]
            LinkReader::Tls(reader) => {
                use tokio::io::AsyncRead;
                let mut scratch = [0u8; 8192];
                let mut read = tokio::io::ReadBuf::new(&mut scratch);
                ready!(Pin::new(reader).poll_read(cx, &mut read))?;
                buf.extend_from_slice(read.filled());
                Poll::Ready(Ok(read.filled().len()))
            }
            LinkReader::Failed => Poll::Ready(Err(io::Error::other("not a byte stream"))),
        }
    }
}

/// The write half of a [`LinkStream`].
#[derive(Debug)]
pub(crate) enum LinkWriter {
    Plain(OwnedWriteHalf),
    #[cfg(feature = "tls")]
    Tls {
        half: tokio::io::WriteHalf<Tls>,
        /// rustls holds records not yet on the socket: flush before calling the link idle.
        unflushed: bool,
    },
    /// A stream that is not read or written here (a pending handshake, an in-process end).
    Failed,
}

impl LinkWriter {
    /// Whether written bytes still wait in a TLS buffer ([`AsyncWrite::poll_flush`] sends
    /// them). Never for plain TCP, which writes straight to the socket.
    pub(crate) fn unflushed(&self) -> bool {
        match self {
            #[cfg(feature = "tls")]
            LinkWriter::Tls { unflushed, .. } => *unflushed,
            _ => false,
        }
    }
}

impl AsyncWrite for LinkWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut *self {
            LinkWriter::Plain(writer) => Pin::new(writer).poll_write(cx, bytes),
            #[cfg(feature = "tls")]
            LinkWriter::Tls { half, unflushed } => {
                let n = ready!(Pin::new(&mut *half).poll_write(cx, bytes))?;
                *unflushed = true;
                // Push the records out now if the socket takes them; otherwise the link
                // flushes before it goes idle.
                if let Poll::Ready(Ok(())) = Pin::new(&mut *half).poll_flush(cx) {
                    *unflushed = false;
                }
                Poll::Ready(Ok(n))
            }
            LinkWriter::Failed => Poll::Ready(Err(io::Error::other("not a byte stream"))),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut *self {
            LinkWriter::Plain(writer) => Pin::new(writer).poll_write_vectored(cx, bufs),
            #[cfg(feature = "tls")]
            LinkWriter::Tls { half, unflushed } => {
                let n = ready!(Pin::new(&mut *half).poll_write_vectored(cx, bufs))?;
                *unflushed = true;
                // As in `poll_write`: out now if the socket takes the records.
                if let Poll::Ready(Ok(())) = Pin::new(&mut *half).poll_flush(cx) {
                    *unflushed = false;
                }
                Poll::Ready(Ok(n))
            }
            LinkWriter::Failed => Poll::Ready(Err(io::Error::other("not a byte stream"))),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            LinkWriter::Plain(writer) => writer.is_write_vectored(),
            #[cfg(feature = "tls")]
            LinkWriter::Tls { half, .. } => half.is_write_vectored(),
            LinkWriter::Failed => false,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut *self {
            LinkWriter::Plain(writer) => Pin::new(writer).poll_flush(cx),
            #[cfg(feature = "tls")]
            LinkWriter::Tls { half, unflushed } => {
                ready!(Pin::new(half).poll_flush(cx))?;
                *unflushed = false;
                Poll::Ready(Ok(()))
            }
            LinkWriter::Failed => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut *self {
            LinkWriter::Plain(writer) => Pin::new(writer).poll_shutdown(cx),
            #[cfg(feature = "tls")]
            LinkWriter::Tls { half, .. } => Pin::new(half).poll_shutdown(cx),
            LinkWriter::Failed => Poll::Ready(Ok(())),
        }
    }
}
