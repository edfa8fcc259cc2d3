//! The request-head deadline and the keep-alive idle time, kept apart.
//!
//! Hyper has one timer for both: its `header_read_timeout` starts whenever the connection
//! waits for a head, so an idle keep-alive connection and a client trickling its head get
//! the same deadline. The contract gives them different ones (10 s for a head, 60 s of
//! idleness), so hyper's is off and this adapter, around the TCP stream, enforces both:
//! from the connection's start, and from the first byte read after an answer, the head
//! must be complete within `limit`; after an answer, the next request's first byte must
//! come within `idle`.
//!
//! "Complete" is told by the service: it bumps [`Heads`] for each request hyper hands it,
//! which hyper does as soon as it has parsed a head. The adapter learns of it on its next
//! read or write, so the hot path pays one relaxed atomic load per I/O call and no timer
//! at all when a head arrives in one read (the timer is only armed when a read must wait).
//!
//! Once the answer is being written the connection counts as idle again, until bytes
//! arrive. A body sent after a `100 Continue` therefore gets `limit` from its first byte
//! rather than the whole-request time: stricter, never looser.
//!
//! One timer per connection serves both deadlines and is moved, not replaced: hyper's
//! own idle timer was a new boxed timer registered and dropped for every request on a
//! keep-alive connection (BENCHMARKS.md, "Counted in instructions").

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// How many request heads hyper has handed to the service on one connection.
#[derive(Debug, Default)]
pub struct Heads(AtomicU64);

impl Heads {
    /// Called by the service for each request: its head is complete.
    pub fn parsed(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A head is due by this instant; `armed` says whether the timer is set to it.
    Head { due: Instant, armed: bool },
    /// A head was parsed and its answer is not out yet: the whole-request timeout's turn.
    Serving,
    /// An answer went out; nothing read since. `armed` once a read has had to wait: the
    /// idle time counts from then (right after the answer, when hyper reads again).
    Idle { armed: bool },
}

pub struct HeadDeadline<T> {
    io: T,
    heads: Arc<Heads>,
    seen: u64,
    phase: Phase,
    limit: Duration,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
}

impl<T> HeadDeadline<T> {
    /// `io` of a connection accepted just now: its first head is due within `limit`, and
    /// after each answer the next request must start within `idle`.
    pub fn new(io: T, heads: Arc<Heads>, limit: Duration, idle: Duration) -> Self {
        let due = Instant::now() + limit;
        Self {
            io,
            seen: heads.count(),
            heads,
            phase: Phase::Head { due, armed: false },
            limit,
            idle,
            timer: Box::pin(tokio::time::sleep_until(due)),
        }
    }

    /// Moves to `Serving` when the service has seen a head since the last look.
    fn catch_up(&mut self) {
        let heads = self.heads.count();
        if heads != self.seen {
            self.seen = heads;
            self.phase = Phase::Serving;
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for HeadDeadline<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.catch_up();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if matches!(this.phase, Phase::Idle { .. }) && buf.filled().len() > before {
                    this.phase = Phase::Head {
                        due: Instant::now() + this.limit,
                        armed: false,
                    };
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let expired = match &mut this.phase {
                    Phase::Head { due, armed } => {
                        if !*armed {
                            this.timer.as_mut().reset(*due);
                            *armed = true;
                        }
                        "request head not complete in time"
                    }
                    Phase::Idle { armed } => {
                        if !*armed {
                            this.timer.as_mut().reset(Instant::now() + this.idle);
                            *armed = true;
                        }
                        "keep-alive connection idle too long"
                    }
                    Phase::Serving => return Poll::Pending,
                };
                if this.timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, expired)));
                }
                Poll::Pending
            }
            ready => ready,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for HeadDeadline<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.answering();
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.answering();
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl<T> HeadDeadline<T> {
    /// An answer is going out: the head it answers is long complete.
    fn answering(&mut self) {
        self.catch_up();
        if self.phase == Phase::Serving {
            self.phase = Phase::Idle { armed: false };
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    const IDLE: Duration = Duration::from_secs(60);

    fn wrapped(
        limit: Duration,
    ) -> (
        HeadDeadline<tokio::io::DuplexStream>,
        tokio::io::DuplexStream,
        Arc<Heads>,
    ) {
        let (server, client) = tokio::io::duplex(1024);
        let heads = Arc::new(Heads::default());
        (
            HeadDeadline::new(server, heads.clone(), limit, IDLE),
            client,
            heads,
        )
    }

    /// A connection (head limit 10 s) whose first request was read, parsed and answered.
    async fn answered() -> (
        HeadDeadline<tokio::io::DuplexStream>,
        tokio::io::DuplexStream,
        Arc<Heads>,
    ) {
        let (mut io, mut client, heads) = wrapped(Duration::from_secs(10));
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        let _ = io.read(&mut buf).await.unwrap();
        heads.parsed();
        io.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        (io, client, heads)
    }

    async fn read_error(io: &mut HeadDeadline<tokio::io::DuplexStream>) -> io::ErrorKind {
        let mut buf = [0u8; 64];
        loop {
            match io.read(&mut buf).await {
                Ok(0) => panic!("closed instead of timing out"),
                Ok(_) => continue,
                Err(err) => return err.kind(),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn given_a_new_connection_when_no_head_arrives_then_the_read_times_out_at_the_limit() {
        let (mut io, _client, _) = wrapped(Duration::from_secs(10));
        let started = Instant::now();
        assert_eq!(read_error(&mut io).await, io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn given_an_answered_request_when_idle_past_the_idle_time_then_the_read_times_out() {
        // The client half stays open (a dropped one would read as end of stream).
        let (mut io, _client, _) = answered().await;

        let started = Instant::now();
        assert_eq!(read_error(&mut io).await, io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), IDLE);
    }

    #[tokio::test(start_paused = true)]
    async fn given_an_idle_connection_when_a_request_starts_in_time_then_the_idle_timer_is_off() {
        let (mut io, mut client, heads) = answered().await;
        let mut buf = [0u8; 64];
        let waiting = tokio::time::timeout(IDLE - Duration::from_secs(1), io.read(&mut buf)).await;
        assert!(waiting.is_err(), "still idle within the idle time");

        // A whole head 59 s in, parsed, and a body awaited: neither deadline applies now.
        client.write_all(b"POST / HTTP/1.1\r\n\r\n").await.unwrap();
        let _ = io.read(&mut buf).await.unwrap();
        heads.parsed();
        let waiting = tokio::time::timeout(IDLE * 2, io.read(&mut buf)).await;
        assert!(waiting.is_err(), "a request being served is not idle");
    }

    #[tokio::test(start_paused = true)]
    async fn given_an_answered_request_when_idle_longer_than_the_limit_then_reads_still_wait() {
        let (mut io, _client, _) = answered().await;
        let mut buf = [0u8; 64];

        // Idle for three times the head limit: no error, the read is still waiting.
        let idle = tokio::time::timeout(Duration::from_secs(30), io.read(&mut buf)).await;
        assert!(
            idle.is_err(),
            "an idle connection gets the idle time, not the head's"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn given_an_idle_connection_when_a_head_starts_but_stalls_then_it_times_out_from_its_first_byte(
    ) {
        let (mut io, mut client, _) = answered().await;
        tokio::time::sleep(Duration::from_secs(25)).await;

        client.write_all(b"GET / HTT").await.unwrap();
        let started = Instant::now();
        assert_eq!(read_error(&mut io).await, io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn given_a_parsed_head_when_the_body_is_awaited_then_the_head_limit_no_longer_applies() {
        let (mut io, mut client, heads) = wrapped(Duration::from_secs(10));
        client.write_all(b"POST / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        let _ = io.read(&mut buf).await.unwrap();
        heads.parsed();

        let waiting = tokio::time::timeout(Duration::from_secs(20), io.read(&mut buf)).await;
        assert!(
            waiting.is_err(),
            "the body is the whole-request timeout's to bound"
        );
    }
}
