//! Business-rule rejections of the `ClientKey` aggregate. Compared by value in tests;
//! mapped to HTTP statuses only at the edge.

/// Longest allowlist a key may have: a browser check scans wildcard entries linearly.
pub const MAX_ORIGINS: usize = 100;
/// Longest grace period API.md allows for a rotated key: one week.
pub const MAX_GRACE_SECONDS: u32 = 604_800;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientKeyError {
    #[error("client key already exists")]
    AlreadyExists,
    #[error("client key not found")]
    NotFound,
    #[error("grace_seconds must be between 0 and 604800")]
    GraceOutOfRange,
    #[error("at most 100 origins are allowed")]
    TooManyOrigins,
    #[error("the new key must differ from the current and previous keys")]
    KeyReused,
    /// The entry, normalised: a wildcard over a public suffix admits every site under it.
    #[error(
        "invalid origin `{0}`: the wildcard's domain is a public suffix, so it would admit every site registered under it"
    )]
    PublicSuffixWildcard(String),
}
