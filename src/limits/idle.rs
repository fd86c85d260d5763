//! Closing gRPC connections that stay idle.
//!
//! tonic's server has keepalive pings (which find dead peers) but no idle timeout, so a client
//! that opens a connection and never uses it holds a connection slot (and its buffers) forever.
//! [`IdleTimeout`] wraps an accepted connection and fails its reads once the client has sent
//! nothing for the timeout, which makes the server close it.
//!
//! "Nothing" must not count the answers to the server's own keepalive pings: a connection that
//! only acknowledges pings is idle. So the wrapper follows the HTTP/2 frames it reads
//! ([`FrameScanner`], pure): every frame is activity except a PING with the ACK flag. A peer's
//! long-lived channel stays open because its client sends keepalive pings of its own
//! (`keep_alive_while_idle`), which are activity.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The client connection preface every HTTP/2 connection starts with.
const PREFACE_LEN: usize = 24;
/// The length of an HTTP/2 frame header.
const FRAME_HEADER_LEN: usize = 9;
/// The PING frame type.
const PING: u8 = 0x6;
/// The ACK flag of a PING frame.
const ACK: u8 = 0x1;

/// Follows the HTTP/2 frames of a connection's inbound bytes and tells whether they hold any
/// activity (any frame but a PING acknowledgement). Pure; fed the bytes as they are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameScanner {
    state: ScanState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ScanState {
    /// Inside the connection preface, with this many bytes left.
    Preface(usize),
    /// Reading a frame header; the bytes read so far.
    Header {
        bytes: [u8; FRAME_HEADER_LEN],
        filled: usize,
    },
    /// Skipping this many payload bytes of the current frame.
    Payload(usize),
}

impl Default for FrameScanner {
    fn default() -> Self {
        Self {
            state: ScanState::Preface(PREFACE_LEN),
        }
    }
}

impl FrameScanner {
    /// Consumes `bytes`; returns whether they contain the preface or a frame (header) other than a
    /// PING acknowledgement.
    pub fn scan(&mut self, mut bytes: &[u8]) -> bool {
        let mut active = false;
        while !bytes.is_empty() {
            match &mut self.state {
                ScanState::Preface(left) => {
                    let taken = (*left).min(bytes.len());
                    *left -= taken;
                    bytes = &bytes[taken..];
                    active = true;
                    if *left == 0 {
                        self.state = header();
                    }
                }
                ScanState::Header {
                    bytes: header_bytes,
                    filled,
                } => {
                    let taken = (FRAME_HEADER_LEN - *filled).min(bytes.len());
                    header_bytes[*filled..*filled + taken].copy_from_slice(&bytes[..taken]);
                    *filled += taken;
                    bytes = &bytes[taken..];
                    if *filled == FRAME_HEADER_LEN {
                        let length = usize::from(header_bytes[0]) << 16
                            | usize::from(header_bytes[1]) << 8
                            | usize::from(header_bytes[2]);
                        let ping_ack = header_bytes[3] == PING && header_bytes[4] & ACK != 0;
                        active |= !ping_ack;
                        self.state = if length == 0 {
                            header()
                        } else {
                            ScanState::Payload(length)
                        };
                    }
                }
                ScanState::Payload(left) => {
                    let taken = (*left).min(bytes.len());
                    *left -= taken;
                    bytes = &bytes[taken..];
                    if *left == 0 {
                        self.state = header();
                    }
                }
            }
        }
        active
    }
}

fn header() -> ScanState {
    ScanState::Header {
        bytes: [0; FRAME_HEADER_LEN],
        filled: 0,
    }
}

/// An accepted HTTP/2 connection whose reads fail with [`io::ErrorKind::TimedOut`] once the client
/// was idle (see the [module documentation](self)) for the timeout.
#[derive(Debug)]
pub struct IdleTimeout<T> {
    io: T,
    timeout: Duration,
    scanner: FrameScanner,
    sleep: Pin<Box<Sleep>>,
}

impl<T> IdleTimeout<T> {
    /// Wraps `io`, closing it after `timeout` without activity.
    pub fn new(io: T, timeout: Duration) -> Self {
        Self {
            io,
            timeout,
            scanner: FrameScanner::default(),
            sleep: Box::pin(tokio::time::sleep(timeout)),
        }
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &T {
        &self.io
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleTimeout<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if this.scanner.scan(&buf.filled()[before..]) {
                    let deadline = Instant::now() + this.timeout;
                    this.sleep.as_mut().reset(deadline);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "gRPC connection idle for longer than GUBER_GRPC_IDLE_TIMEOUT",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

pass_writes_and_connect_info_to_io!(IdleTimeout);

/// Wraps every connection of `incoming` in an [`IdleTimeout`] of `timeout`; a zero timeout leaves
/// connections open however idle (the wrapper still passes bytes through unchanged).
pub fn idle_incoming<S, T>(
    incoming: S,
    timeout: Duration,
) -> impl futures_util::Stream<Item = io::Result<IdleTimeout<T>>> + Send + 'static
where
    S: futures_util::Stream<Item = io::Result<T>> + Send + 'static,
    T: Send + 'static,
{
    use futures_util::StreamExt;
    // About 31 years: "never" without overflowing `Instant`.
    let timeout = if timeout.is_zero() {
        Duration::from_secs(1 << 30)
    } else {
        timeout
    };
    incoming.map(move |accepted| accepted.map(|io| IdleTimeout::new(io, timeout)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut bytes = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            kind,
            flags,
            0,
            0,
            0,
            0,
        ];
        bytes.extend_from_slice(payload);
        bytes
    }

    #[test]
    fn the_preface_and_ordinary_frames_are_activity() {
        let mut scanner = FrameScanner::default();
        assert!(scanner.scan(PREFACE));
        assert!(scanner.scan(&frame(0x4, 0, &[0; 6])), "SETTINGS");
        assert!(scanner.scan(&frame(0x1, 0x4, b"headers")), "HEADERS");
        assert!(
            scanner.scan(&frame(PING, 0, &[1; 8])),
            "a client's own ping"
        );
    }

    #[test]
    fn ping_acknowledgements_are_not_activity() {
        let mut scanner = FrameScanner::default();
        assert!(scanner.scan(PREFACE));
        assert!(!scanner.scan(&frame(PING, ACK, &[7; 8])));
        assert!(!scanner.scan(&frame(PING, ACK, &[7; 8])));
        assert!(scanner.scan(&frame(0x0, 0, b"data")));
    }

    #[test]
    fn frames_split_across_reads_are_followed() {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(PING, ACK, &[9; 8]));
        bytes.extend(frame(0x8, 0, &[0, 0, 1, 0]));
        let mut scanner = FrameScanner::default();
        // The preface, then the ping ack byte by byte: only the preface is activity.
        assert!(scanner.scan(&bytes[..24]));
        for byte in &bytes[24..24 + 17] {
            assert!(!scanner.scan(std::slice::from_ref(byte)));
        }
        // The WINDOW_UPDATE header completes in the second of two reads.
        assert!(!scanner.scan(&bytes[41..45]));
        assert!(scanner.scan(&bytes[45..]));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_fails_its_reads_and_an_active_one_does_not() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, server) = tokio::io::duplex(1024);
        let mut server = IdleTimeout::new(server, Duration::from_secs(10));
        let mut client = client;
        client.write_all(PREFACE).await.unwrap();
        let mut buffer = [0u8; 64];
        assert_eq!(server.read(&mut buffer).await.unwrap(), 24);
        // Ping acknowledgements every 4 s do not keep it open.
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_secs(4)).await;
            client.write_all(&frame(PING, ACK, &[0; 8])).await.unwrap();
            assert_eq!(server.read(&mut buffer).await.unwrap(), 17);
        }
        let error = server.read(&mut buffer).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(tokio::time::Instant::now() >= Instant::now());
    }

    #[tokio::test(start_paused = true)]
    async fn activity_pushes_the_deadline_back() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tokio::io::duplex(1024);
        let mut server = IdleTimeout::new(server, Duration::from_secs(10));
        client.write_all(PREFACE).await.unwrap();
        let mut buffer = [0u8; 64];
        assert_eq!(server.read(&mut buffer).await.unwrap(), 24);
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(8)).await;
            client.write_all(&frame(PING, 0, &[0; 8])).await.unwrap();
            assert_eq!(
                server.read(&mut buffer).await.unwrap(),
                17,
                "40 s, still open"
            );
        }
    }
}
