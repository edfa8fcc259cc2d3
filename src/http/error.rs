//! The HTTP layer's one error type. Handlers return `ApiError`; it becomes a JSON body on
//! the internal listener and a short `text/plain` sentence on the public one (see
//! [`to_plain_text`]). User errors are 4xx with the contract's message, a stopped
//! store is 503 with `Retry-After`, and anything else is an opaque 500 whose cause chain
//! is logged, never sent.

use std::borrow::Cow;
use std::fmt::Write as _;

use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::commands::CommandError;
use crate::limits::Limited;
use crate::sessions::SessionError;
use crate::store::StoreError;

/// Seconds a client should wait before retrying when the store is down.
pub const RETRY_AFTER_SECONDS: u32 = 2;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: Cow<'static, str>,
    pub retry_after: Option<u32>,
}

/// Carried on error responses so the public listener can re-render them as text.
#[derive(Debug, Clone)]
struct ErrorMessage(Cow<'static, str>);

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn unauthorized(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unavailable(message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            retry_after: Some(RETRY_AFTER_SECONDS),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
        }
    }

    /// Logs `err` with its cause chain and answers an opaque 500.
    pub fn internal(err: &(dyn std::error::Error + 'static)) -> Self {
        let mut chain = err.to_string();
        let mut source = err.source();
        while let Some(cause) = source {
            let _ = write!(chain, ": {cause}");
            source = cause.source();
        }
        tracing::error!(error = %chain, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }
}

impl ApiError {
    /// The public listener's form of this error, built directly: what [`to_plain_text`]
    /// makes of the JSON form, without serializing JSON only to replace it (the
    /// unknown-key flood answers nothing else).
    pub fn into_plain_text(self) -> Response {
        let mut response = Response::new(axum::body::Body::from(plain_body(self.message)));
        *response.status_mut() = self.status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        add_headers(self.status, self.retry_after, response)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(serde::Serialize)]
        struct Body<'a> {
            error: &'a str,
            message: &'a str,
        }
        // Serialized from borrowed fields: a `json!` map cost a fifth of a refused
        // request.
        let body = Body {
            error: self.code,
            message: &self.message,
        };
        let response = (self.status, axum::Json(body)).into_response();
        let mut response = add_headers(self.status, self.retry_after, response);
        response.extensions_mut().insert(ErrorMessage(self.message));
        response
    }
}

/// The headers an error's status calls for, in either form.
fn add_headers(status: StatusCode, retry_after: Option<u32>, mut response: Response) -> Response {
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

fn plain_body(message: Cow<'static, str>) -> Bytes {
    match message {
        Cow::Borrowed(message) => Bytes::from_static(message.as_bytes()),
        Cow::Owned(message) => Bytes::from(message),
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        if err.is_unavailable() {
            tracing::warn!(error = %err, "event store unavailable");
            return Self::unavailable("the store is unavailable; retry shortly");
        }
        if matches!(err, StoreError::Conflict) {
            return Self::new(StatusCode::CONFLICT, "conflict", err.to_string());
        }
        Self::internal(&err)
    }
}

impl From<CommandError> for ApiError {
    fn from(err: CommandError) -> Self {
        use domain::ClientKeyError as Rule;
        match err {
            CommandError::Rejected(Rule::NotFound) => Self::not_found("client key not found"),
            CommandError::Rejected(Rule::AlreadyExists) => Self::new(
                StatusCode::CONFLICT,
                "already_exists",
                "client key already exists",
            ),
            CommandError::Rejected(rule) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_command", rule.to_string())
            }
            err @ CommandError::StaleVersion { .. } => {
                Self::new(StatusCode::CONFLICT, "version_conflict", err.to_string())
            }
            err @ CommandError::IdempotencyKeyReused => Self::new(
                StatusCode::CONFLICT,
                "idempotency_key_reused",
                err.to_string(),
            ),
            err @ (CommandError::SeveralEvents(_) | CommandError::Serialize(_)) => {
                Self::internal(&err)
            }
            CommandError::Store(err) => err.into(),
        }
    }
}

impl From<Limited> for ApiError {
    /// API.md: 429 `rate limit exceeded` with `Retry-After` in whole seconds.
    fn from(limited: Limited) -> Self {
        Self {
            retry_after: Some(limited.retry_after_seconds()),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "rate limit exceeded",
            )
        }
    }
}

impl From<SessionError> for ApiError {
    /// The contract's status for each session refusal; the message is the error's text.
    fn from(err: SessionError) -> Self {
        let message = err.to_string();
        match err {
            SessionError::InvalidToken { .. }
            | SessionError::ClientKeyGone { .. }
            | SessionError::TokenOfDisabledKey
            | SessionError::Revoked { .. }
            | SessionError::InvalidProfile { .. }
            | SessionError::AlreadyExchanged
            | SessionError::RefreshReused
            | SessionError::GuestFamilyEnded
            | SessionError::FamilyEnded => Self::bad_request(message),
            SessionError::InvalidSecretKey | SessionError::SecretKeyOfAnotherKey => {
                Self::unauthorized(message)
            }
            SessionError::KeyDisabled
            | SessionError::GuestsNotAllowed
            | SessionError::OriginMismatch => Self::forbidden(message),
        }
    }
}

/// For the public listener: API.md wants error bodies there as short plain sentences.
pub fn to_plain_text(mut response: Response) -> Response {
    if let Some(ErrorMessage(message)) = response.extensions_mut().remove::<ErrorMessage>() {
        let (mut parts, _) = response.into_parts();
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        parts.headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(parts, axum::body::Body::from(plain_body(message)));
    }
    response
}

/// A JSON request body, parsed with our errors instead of axum's: a body that is not
/// JSON or has wrong types is a 400 naming the field, too large is 413. The body is
/// parsed as JSON whatever its `Content-Type` says: browsers send `text/plain` to avoid a
/// CORS preflight, and curl users send form encoding by default.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes =
            Bytes::from_request(request, state)
                .await
                .map_err(|rejection: BytesRejection| {
                    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                        ApiError::new(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "too_large",
                            "request body too large",
                        )
                    } else {
                        ApiError::bad_request("request body could not be read")
                    }
                })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parses a body that must be exactly one JSON object (API.md "Public endpoints"), with
/// the path of the offending field in the message. An array is refused before serde sees
/// it (a derived struct would otherwise fill its fields from the items in order), and
/// the deserializer must reach the end: `{...} xx` or `{...}{...}` is not one object.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(ApiError::bad_request(if first.is_none() {
            "invalid JSON body: expected a JSON object, got an empty body"
        } else {
            "invalid JSON body: expected a JSON object"
        }));
    }
    let deserializer = &mut serde_json::Deserializer::from_slice(bytes);
    let value =
        serde_path_to_error::deserialize(&mut *deserializer).map_err(|err| json_error(&err))?;
    deserializer.end().map_err(|_| {
        ApiError::bad_request("invalid JSON body: unexpected data after the JSON object")
    })?;
    Ok(value)
}

/// Deserializes an already-parsed JSON value with the same error messages; an array
/// where an object is expected is refused at any depth (see [`super::strict`]).
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(super::strict::Strict(value)).map_err(|err| json_error(&err))
}

fn json_error<E: std::fmt::Display>(err: &serde_path_to_error::Error<E>) -> ApiError {
    let path = err.path().to_string();
    let inner = err.inner().to_string();
    let message = if path.is_empty() || path == "." {
        format!("invalid JSON body: {inner}")
    } else {
        format!("invalid JSON body: {path}: {inner}")
    };
    ApiError::bad_request(message)
}

#[cfg(test)]
mod tests {
    use axum::body::to_bytes;
    use axum::http::{header, StatusCode};
    use axum::response::{IntoResponse, Response};

    use super::{to_plain_text, ApiError};

    async fn parts(response: Response) -> (StatusCode, Vec<(String, String)>, String) {
        let status = response.status();
        let mut headers: Vec<(String, String)> = response
            .headers()
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned()))
            .collect();
        headers.sort();
        let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, headers, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn the_direct_plain_text_form_is_what_the_json_form_becomes_on_the_public_listener() {
        // Given errors with each extra header and both kinds of message
        let errors = || {
            [
                ApiError::forbidden("unknown client_key"),
                ApiError::unauthorized(format!("token {} expired", "of one visitor")),
                ApiError::unavailable("starting up; retry shortly"),
            ]
        };
        for (direct, converted) in errors().into_iter().zip(errors()) {
            // When one is rendered as plain text directly and the other as JSON and then
            // converted
            let direct = parts(direct.into_plain_text()).await;
            let converted = parts(to_plain_text(converted.into_response())).await;
            // Then status, headers and body agree
            assert_eq!(direct, converted);
        }
        let (status, headers, body) = parts(ApiError::unavailable("down").into_plain_text()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, "down");
        assert!(headers.contains(&(header::RETRY_AFTER.to_string(), "2".to_owned())));
        assert!(headers.contains(&(
            header::CONTENT_TYPE.to_string(),
            "text/plain; charset=utf-8".to_owned()
        )));
    }
}
