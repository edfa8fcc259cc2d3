//! OpenAPI schemas of the value types whose wire shape is not their Rust shape: an
//! origin pattern is parsed from a string, a token policy is read through its optional
//! wire fields. Deriving the rest (`#[derive(utoipa::ToSchema)]` beside `Serialize`) keeps
//! the published spec generated from the same types that parse the requests.

use std::borrow::Cow;

use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

use crate::config::{HexColor, HttpsUrl, Locale, Text, MAX_TEXT_CHARS};
use crate::keys::{ClientKeyId, PublicKey};
use crate::limits::{RateLimits, RawLimits};
use crate::origin::OriginPattern;
use crate::policy::{RawPolicy, TokenPolicy};

impl PartialSchema for OriginPattern {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::String))
            .description(Some(
                "`scheme://host[:port]` (http or https); `*.` before the host admits its \
                 subdomains, `:*` any port",
            ))
            .examples(["https://shop.example.com"])
            .into()
    }
}

impl ToSchema for OriginPattern {}

/// A policy is read through [`RawPolicy`] (any field left out keeps its default), so its
/// schema is that one's.
impl PartialSchema for TokenPolicy {
    fn schema() -> RefOr<Schema> {
        RawPolicy::schema()
    }
}

/// Limits are read through [`RawLimits`] (a field left out keeps its default).
impl PartialSchema for RateLimits {
    fn schema() -> RefOr<Schema> {
        RawLimits::schema()
    }
}

impl ToSchema for RateLimits {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("RateLimits")
    }
}

impl ToSchema for TokenPolicy {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("TokenPolicy")
    }
}

/// A string schema with the rules its parser enforces, so a generated client (and a
/// fuzzer) learns them from the spec.
fn string(description: &str, pattern: Option<&str>, max_length: Option<usize>) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::String))
        .description(Some(description))
        .pattern(pattern)
        .max_length(max_length)
        .into()
}

/// `impl ToSchema` for a string newtype, named after it.
macro_rules! string_schema {
    ($type:ty, $name:literal, $description:literal, $pattern:expr, $max_length:expr) => {
        impl PartialSchema for $type {
            fn schema() -> RefOr<Schema> {
                string($description, $pattern, $max_length)
            }
        }
        impl ToSchema for $type {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
        }
    };
}

string_schema!(
    HexColor,
    "HexColor",
    "a colour `#RRGGBB`",
    Some("^#[0-9A-Fa-f]{6}$"),
    None
);
string_schema!(
    HttpsUrl,
    "HttpsUrl",
    "an absolute `https` URL",
    Some("^https://"),
    Some(MAX_TEXT_CHARS)
);
string_schema!(
    Text,
    "Text",
    "text of at most 500 characters, no control characters but line breaks",
    None,
    Some(MAX_TEXT_CHARS)
);
string_schema!(
    Locale,
    "Locale",
    "a language tag such as `en` or `pt-BR`",
    Some("^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$"),
    Some(35)
);
string_schema!(
    PublicKey,
    "PublicKey",
    "a public key: `pk_live_`, 24 random and 6 checksum characters (base62)",
    Some("^pk_live_[0-9A-Za-z]{30}$"),
    None
);
string_schema!(
    ClientKeyId,
    "ClientKeyId",
    "the stable id of a client key",
    None,
    None
);
