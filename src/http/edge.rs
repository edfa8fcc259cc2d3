//! The service each listener answers through: its router inside the request span, named by
//! route template before routing and counted by route and status on the way out. What a
//! listener adds around its router (the public one's preflights, config and plain-text
//! errors, the internal one's admin check) is its [`Listen`]; what it answers itself,
//! logging nothing, is answered at once, with no span and no boxed future.
//!
//! A hand-written service rather than `middleware::from_fn` layers: each `from_fn` cloned
//! the route's boxed service and its own state and boxed a future for every request
//! (about 4,000 instructions a config request and 8,500 an admin command under
//! callgrind, BENCHMARKS.md).

use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, Method};
use axum::response::Response;
use axum::Router;
use futures::future::Either;
use tower::{Layer, Service};
use tracing::{Instrument, Span};
use utoipa_axum::router::OpenApiRouter;

use super::error::ApiError;

use crate::metrics::Listener;
use crate::state::AppState;

/// A listener's router with its body limit around it.
pub type Inner = <DefaultBodyLimit as Layer<Router>>::Service;

/// What one listener does with a request, around its router. Plain functions, not an
/// `async fn` answer awaiting the router itself: that nested future was built and then
/// moved into the edge's, a copy of its whole size for every request (560 instructions of
/// `memcpy` a config request under callgrind).
pub trait Listen: Send + 'static {
    /// The listener's label in `/metrics`.
    const LISTENER: Listener;

    /// The listener's route templates.
    fn routes() -> &'static Routes;

    /// Changes the request before its span is made; nothing by default.
    fn prepare(_request: &mut Request) {}

    /// The response to a request of `route`, or the request for the router to answer.
    /// Called outside the request span, which only the router's answers are made in (the
    /// `response` line at debug level excepted): a response made here must log nothing.
    fn answer(state: &AppState, route: Option<&'static str>, request: Request) -> Answer;

    /// The response as it leaves, whoever made it; unchanged by default.
    fn finish(_route: Option<&'static str>, response: Response) -> Response {
        response
    }
}

/// Who answers a request: the listener now, or its router.
#[derive(Debug)]
pub enum Answer {
    Here(Response),
    Route(Request),
}

/// The service of the listener `L`.
pub struct Edge<L> {
    state: AppState,
    inner: Inner,
    listener: PhantomData<fn() -> L>,
}

impl<L> Edge<L> {
    /// The listener's `routes` with the 404 for any other path, `body_limit` around the
    /// whole router rather than on each route (`Router::layer`: a per-route layer is one
    /// more boxed service cloned for every request; a route's own, larger limit set
    /// inside it still wins there).
    pub(super) fn new(state: AppState, routes: OpenApiRouter<AppState>, body_limit: usize) -> Self {
        let (router, _) = routes.split_for_parts();
        let router = router
            .fallback(|| async { ApiError::not_found("no such endpoint") })
            .with_state(state.clone());
        Self::around(state, DefaultBodyLimit::max(body_limit).layer(router))
    }

    fn around(state: AppState, inner: Inner) -> Self {
        Self {
            state,
            inner,
            listener: PhantomData,
        }
    }
}

// By hand: derived, both would require `L: Clone` / `L: Debug` of a marker never held.
impl<L> Clone for Edge<L> {
    fn clone(&self) -> Self {
        Self::around(self.state.clone(), self.inner.clone())
    }
}

impl<L> std::fmt::Debug for Edge<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge")
            .field("listener", &std::any::type_name::<L>())
            .finish_non_exhaustive()
    }
}

impl<L: Listen> Service<Request> for Edge<L> {
    type Response = Response;
    type Error = Infallible;
    type Future = Either<
        Ready<Result<Response, Infallible>>,
        Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Service::<Request>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let started = Instant::now();
        let route = L::routes().route_of(request.uri().path());
        L::prepare(&mut request);
        let id = super::request_id(&request);
        let method = request.method().clone();
        match L::answer(&self.state, route, request) {
            // Answered now, with no future to box and no request span: nothing here logs
            // (see `Listen::answer`), and making the span, entering and leaving it cost
            // about 3,100 instructions of config's 23,800 under callgrind.
            Answer::Here(response) => Either::Left(ready(Ok(finished::<L>(
                &self.state,
                route,
                response,
                Logged::new(started, &method, id, None),
            )))),
            Answer::Route(request) => {
                let state = self.state.clone();
                let mut inner = self.inner.clone();
                let span = super::request_span(&method, route, &id);
                Either::Right(Box::pin(async move {
                    let response = match inner.call(request).instrument(span.clone()).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    };
                    let logged = Logged::new(started, &method, id, Some(&span));
                    Ok(finished::<L>(&state, route, response, logged))
                }))
            }
        }
    }
}

/// What a response's way out needs of its request for the metrics and the logs.
struct Logged<'a> {
    started: Instant,
    method: &'a Method,
    id: HeaderValue,
    span: Option<&'a Span>,
}

impl<'a> Logged<'a> {
    fn new(started: Instant, method: &'a Method, id: HeaderValue, span: Option<&'a Span>) -> Self {
        Self {
            started,
            method,
            id,
            span,
        }
    }
}

/// The response of a request of `route` as it leaves: the listener's last changes, the
/// metrics, the `response` line at debug level (in the request's span, made now if the
/// listener answered without one) and the request id.
fn finished<L: Listen>(
    state: &AppState,
    route: Option<&'static str>,
    response: Response,
    logged: Logged<'_>,
) -> Response {
    let mut response = L::finish(route, response);
    state.metrics.request(
        L::LISTENER,
        route,
        response.status().as_u16(),
        logged.started.elapsed(),
    );
    if tracing::enabled!(tracing::Level::DEBUG) {
        match logged.span {
            Some(span) => super::log_response(span, &response, logged.started),
            None => {
                let span = super::request_span(logged.method, route, &logged.id);
                super::log_response(&span, &response, logged.started);
            }
        }
    }
    response.headers_mut().insert(super::REQUEST_ID, logged.id);
    response
}

/// Every route template a listener serves (`/internal/v1/client-keys/{id}`), with a
/// matcher from template to its place in the list: the route's name in the request span
/// and the metrics' label (what `MatchedPath` says inside the router), known before
/// routing.
#[derive(Debug)]
pub struct Routes {
    templates: Vec<String>,
    matcher: matchit::Router<usize>,
}

impl Routes {
    /// The routes of a listener's OpenAPI document, made from the same list as its
    /// router.
    pub fn of(openapi: utoipa::openapi::OpenApi) -> Self {
        let templates: Vec<String> = openapi.paths.paths.into_keys().collect();
        let mut matcher = matchit::Router::new();
        for (i, template) in templates.iter().enumerate() {
            // The router was built from the same templates, so none conflicts.
            let _ = matcher.insert(template.as_str(), i);
        }
        Self { templates, matcher }
    }

    /// The route template `path` belongs to, `None` when no route serves it; found by
    /// the matcher axum's router itself uses (matching each template segment by segment
    /// cost 9,000 instructions an admin command).
    pub fn route_of(&self, path: &str) -> Option<&str> {
        if let Some(route) = self.templates.iter().find(|t| *t == path) {
            return Some(route);
        }
        let found = self.matcher.at(path).ok()?;
        Some(self.templates[*found.value].as_str())
    }
}
