//! Serving one listener's connections within the contract's limits (API.md "Operating
//! contract"): a request head within 10 s, a whole request within 30 s, at most
//! `WIDGET_AUTH_MAX_CONNECTIONS` connections at once (further ones wait in the kernel's
//! accept queue), and on shutdown a bounded grace for in-flight requests.
//!
//! Built from hyper-util's server (the same one `axum::serve` uses, configured here
//! because `axum::serve` exposes neither a timer nor the header timeout); this module
//! wires it up:
//! - [`head_deadline`], around the TCP stream, closes a connection whose head, once begun
//!   (or since the connection opened), is not complete in time, and one left idle after
//!   an answer longer than the keep-alive idle time (hyper's own `header_read_timeout`,
//!   one clock for both, is off);
//! - [`WholeRequest`] bounds everything after the head of a request that has a body, the
//!   body included (tower-http's per-frame body timeout would let a trickled body run
//!   forever): 408. A request without one is whole once its head is, which the head
//!   deadline already bounds, so [`WholeRequest`] arms no timer for it: a timer per
//!   request is a clock read and a timer-wheel insert and removal on the busiest path
//!   (config, a GET);
//! - HTTP/1 only: HTTP/2 without TLS (h2c, which no browser speaks) has no header timeout
//!   in hyper, so a silent h2c client could hold a connection without limit; and with
//!   one protocol the builder starts HTTP/1 at once instead of first waiting for bytes to
//!   tell the protocols apart (a wait no timer covers). No upgrades are served;
//! - a semaphore permit per connection, taken before `accept`, is the connection cap;
//! - each request carries [`ConnectInfo`] with the TCP peer, as
//!   `into_make_service_with_connect_info` would give it, for handlers that need the
//!   client's address.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse as _, Response};
use futures::future::{Either, FutureExt as _, Map};
use hyper::body::{Body as _, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::error::Elapsed;
use tower::{Service, ServiceExt as _};

use crate::config::{ConnectionTimeouts, Settings};

mod head_deadline;
use head_deadline::{HeadDeadline, Heads};

/// What one listener enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub timeouts: ConnectionTimeouts,
    pub max_connections: usize,
    pub shutdown_grace: Duration,
}

impl Limits {
    pub fn of(settings: &Settings) -> Self {
        Self {
            timeouts: settings.timeouts,
            max_connections: settings.max_connections,
            shutdown_grace: settings.shutdown_grace,
        }
    }
}

/// Serves `listener` with `service` (a listener's router, or the public edge around
/// one) until `stop` turns true, then stops accepting, gives in-flight requests
/// `shutdown_grace` to finish and closes whatever is still open.
pub async fn serve<S>(
    name: &'static str,
    listener: TcpListener,
    service: S,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    // Off, not left at hyper's default (30 s, which also needs a timer): `HeadDeadline`
    // times heads and idleness.
    builder.http1().header_read_timeout(None);
    let service = WholeRequest {
        inner: service,
        limit: limits.timeouts.whole_request,
    };
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    loop {
        // The permit first: at the cap, new connections stay in the accept queue.
        let permit = tokio::select! {
            biased;
            () = stopped(&mut stop) => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            () = stopped(&mut stop) => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(listener = name, error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let _ = stream.set_nodelay(true);
        let heads = Arc::new(Heads::default());
        let stream = HeadDeadline::new(
            stream,
            heads.clone(),
            limits.timeouts.request_head,
            limits.timeouts.idle_keep_alive,
        );
        let service = service
            .clone()
            .map_request(move |request: Request<Incoming>| {
                heads.parsed();
                let mut request = request.map(Body::new);
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            });
        let connection = builder
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
            .into_owned();
        let connection = graceful.watch(connection);
        connections.spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(%peer, error = %err, "connection closed with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    let open = graceful.count();
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = name,
            open,
            grace_seconds = limits.shutdown_grace.as_secs_f64(),
            "shutdown grace over; closing the connections still open"
        );
    }
    connections.shutdown().await;
}

/// The whole-request deadline, for requests with a body only (see the module's notes):
/// past `limit`, 408 and the handler's future dropped.
#[derive(Clone)]
struct WholeRequest<S> {
    inner: S,
    limit: Duration,
}

type Timed<F, E> =
    Map<tokio::time::Timeout<F>, fn(Result<Result<Response, E>, Elapsed>) -> Result<Response, E>>;

fn timed_out<E>(answer: Result<Result<Response, E>, Elapsed>) -> Result<Response, E> {
    answer.unwrap_or_else(|_| Ok(StatusCode::REQUEST_TIMEOUT.into_response()))
}

impl<S> Service<Request<Body>> for WholeRequest<S>
where
    S: Service<Request<Body>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<S::Future, Timed<S::Future, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let bodiless = request.body().is_end_stream();
        let answer = self.inner.call(request);
        if bodiless {
            Either::Left(answer)
        } else {
            let timed_out: fn(_) -> _ = timed_out::<S::Error>;
            Either::Right(tokio::time::timeout(self.limit, answer).map(timed_out))
        }
    }
}

/// Resolves once shutdown is asked for (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use axum::extract::ConnectInfo;
    use axum::routing::get;
    use axum::Router;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    #[tokio::test]
    async fn handlers_see_the_tcp_peer_as_connect_info() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let addr = listener.local_addr().expect("addr");
        let router = Router::new().route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        );
        let limits = Limits {
            timeouts: ConnectionTimeouts::default(),
            max_connections: 4,
            shutdown_grace: Duration::from_secs(1),
        };
        let (stop, stopped) = watch::channel(false);
        let server = tokio::spawn(serve("test", listener, router, limits, stopped));
        let mut client = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connects");
        let me = client.local_addr().expect("local addr");
        client
            .write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("sent");
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.expect("read");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            answer.ends_with(&me.to_string()),
            "{answer} should end with {me}"
        );
        let _ = stop.send(true);
        server.await.expect("stopped");
    }
}
