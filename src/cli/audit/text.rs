//! The audit answers as text for people: a key's history, what a token was minted under,
//! the chain check. Pure functions of the typed results, so they are tested here without
//! a store; what each event changed is worded once, by [`crate::audit::Change`].

use chrono::{DateTime, SecondsFormat, Utc};
use domain::KeyStatus;

use crate::audit::{CheckpointReport, KeyHistory, RefreshFamily, TokenReport, VerifyReport};
use crate::sessions::FamilyStanding;
use crate::tokens::TokenKind;

/// The one-line answer of `audit verify`.
pub(super) fn verify(report: &VerifyReport) -> String {
    let legacy = match report.legacy_events {
        0 => String::new(),
        n => format!(
            " ({n} legacy events written before the chain existed: only a chained \
             event after them in the same key protects them)"
        ),
    };
    match &report.broken {
        None => format!("intact, {} events{legacy}", report.events),
        Some(b) => format!(
            "BROKEN at {} sequence {} ({}): {}",
            b.client_key_id,
            b.sequence,
            b.problem.code(),
            b.message
        ),
    }
}

/// `audit verify --checkpoint`: the verdict, then one line per problem.
pub(super) fn checkpoint_verify(report: &CheckpointReport) -> String {
    let mut out = if report.intact() {
        format!(
            "intact: the store extends the checkpoint of {} ({} keys, signed by {}; {} \
             keys created since, {} events read)\n",
            report.checkpoint_at, report.keys, report.kid, report.new_keys, report.events
        )
    } else {
        format!(
            "NOT INTACT against the checkpoint of {} ({} problems):\n",
            report.checkpoint_at,
            report.problems.len()
        )
    };
    for problem in &report.problems {
        let place = match (&problem.client_key, problem.sequence) {
            (Some(key), Some(sequence)) => format!("{key} sequence {sequence}"),
            (Some(key), None) => key.clone(),
            _ => "checkpoint".to_owned(),
        };
        out.push_str(&format!(
            "  {place} ({}): {}\n",
            problem.problem.code(),
            problem.message
        ));
    }
    out
}

/// `audit history`: a heading, then two lines per event (who, when, why; what changed).
pub(super) fn history(history: &KeyHistory) -> String {
    let mut out = format!(
        "{}: {} events\n",
        history.client_key_id,
        history.events.len()
    );
    for entry in &history.events {
        let event = &entry.archived.event;
        let metadata = &event.metadata;
        let reason = metadata
            .reason
            .as_deref()
            .map(|r| format!("  reason: {r}"))
            .unwrap_or_default();
        out.push_str(&format!(
            "{:>5}  {}  {:<20} by {}  request {}{reason}\n       {}\n",
            event.sequence,
            metadata.at.to_rfc3339_opts(SecondsFormat::Millis, true),
            event.kind,
            metadata.actor,
            if metadata.request_id.is_empty() {
                "-"
            } else {
                &metadata.request_id
            },
            entry.summary,
        ));
    }
    out
}

/// `audit token`: the token, the key as it stood when it was minted, and what changed since.
pub(super) fn token(report: &TokenReport) -> String {
    let token = &report.token;
    let in_force = &report.in_force;
    let policy = &in_force.token_policy;
    let origins: Vec<&str> = in_force
        .origins
        .entries()
        .iter()
        .map(|o| o.as_str())
        .collect();
    let previous: Vec<String> = in_force
        .previous_public_keys
        .iter()
        .map(|p| format!("{} (until {})", p.public_key.as_str(), time(&p.valid_until)))
        .collect();
    let mut out = format!(
        "{} token for {} minted {} (expires at unix {}), signature valid\n\
         client key {} at version {} (now at version {})\n\
         status: {}\n\
         origins: {}\n\
         token policy: visitor {}s, session {}s, refresh {}s, guests {}\n\
         public key: {}{}\n\
         secret key: \u{2026}{}\n",
        kind(token.kind),
        token.sub,
        token
            .minted_at
            .as_ref()
            .map_or_else(|| "-".to_owned(), time),
        token.exp,
        token.ck,
        token.ver,
        report.current_version,
        status(in_force.status),
        origins.join(", "),
        policy.visitor_token_ttl_seconds(),
        policy.session_ttl_seconds(),
        policy.refresh_ttl_seconds(),
        if policy.guests_allowed() {
            "allowed"
        } else {
            "not allowed"
        },
        in_force.public_key.as_str(),
        if previous.is_empty() {
            String::new()
        } else {
            format!(" (previous: {})", previous.join(", "))
        },
        in_force.secret_key_last_four,
    );
    if let Some(origin) = &token.origin {
        out.push_str(&format!(
            "origin {origin}: {}\n",
            if report.origin_allowed_then == Some(true) {
                "in the allowlist then"
            } else {
                "NOT in the allowlist then"
            }
        ));
    }
    if let Some(family) = &report.refresh_family {
        out.push_str(&refresh_family(family));
    }
    if !report.changes_since.is_empty() {
        out.push_str("changes since:\n");
        for change in &report.changes_since {
            out.push_str(&format!(
                "{:>5}  {}  {}\n",
                change.sequence, change.kind, change.summary
            ));
        }
    }
    out
}

/// A refresh token's family: which generation it is, and whether it is live, spent or
/// revoked, and why.
fn refresh_family(family: &RefreshFamily) -> String {
    let generation = family
        .generation
        .map_or_else(|| "unknown".to_owned(), |g| g.to_string());
    let standing = match &family.standing {
        FamilyStanding::Live { expired: false } => {
            "live: the family's current token; presenting it rotates it".to_owned()
        }
        FamilyStanding::Live { expired: true } => {
            "live but expired: the family's last token, past its exp".to_owned()
        }
        FamilyStanding::Spent {
            spent_at_ms,
            successor: Some(successor),
            ..
        } => format!(
            "spent at unix ms {}: rotated into {successor}, the family's live token; \
             presented again within 10 s it gets that token again, later it revokes the family",
            spent_at_ms.unwrap_or_default()
        ),
        FamilyStanding::Spent {
            live_generation, ..
        } => format!(
            "spent: the family has moved on (live generation {}); presenting it revokes the family",
            live_generation.map_or_else(|| "unknown".to_owned(), |g| g.to_string())
        ),
        FamilyStanding::Revoked {
            at,
            reason,
            generation_replayed,
        } => format!(
            "revoked at unix {at} ({reason}: generation {} was presented again after it was spent); \
             every token of the family is refused",
            generation_replayed.map_or_else(|| "unknown".to_owned(), |g| g.to_string())
        ),
    };
    format!(
        "refresh family {} (this token: generation {generation}): {standing}\n",
        family.family
    )
}

/// A time as the JSON output writes it (chrono's serde form), so text and JSON agree.
fn time(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// A token kind by its name in the claims.
fn kind(kind: TokenKind) -> &'static str {
    match kind {
        TokenKind::Visitor => "visitor",
        TokenKind::Session => "session",
        TokenKind::Refresh => "refresh",
    }
}

/// A key status by its name in the admin JSON.
fn status(status: KeyStatus) -> &'static str {
    match status {
        KeyStatus::Active => "active",
        KeyStatus::Disabled => "disabled",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::audit::{CheckpointProblem, Finding, SignatureCheck};
    use crate::chain::{Broken, Problem};

    #[test]
    fn kinds_and_statuses_read_as_their_json_names() {
        for k in [TokenKind::Visitor, TokenKind::Session, TokenKind::Refresh] {
            assert_eq!(json!(kind(k)), json!(k));
        }
        for s in [KeyStatus::Active, KeyStatus::Disabled] {
            assert_eq!(json!(status(s)), json!(s));
        }
    }

    #[test]
    fn times_read_as_the_json_writes_them() {
        let whole = DateTime::from_timestamp(1_767_225_600, 0).expect("time");
        let fraction = DateTime::from_timestamp(1_767_225_600, 120_000_000).expect("time");
        for at in [whole, fraction] {
            assert_eq!(json!(time(&at)), json!(at));
        }
        assert_eq!(time(&whole), "2026-01-01T00:00:00Z");
    }

    #[test]
    fn an_intact_chain_with_legacy_events_says_what_protects_them() {
        let report = VerifyReport {
            events: 5,
            legacy_events: 2,
            broken: None,
        };
        assert_eq!(
            verify(&report),
            "intact, 5 events (2 legacy events written before the chain existed: only a \
             chained event after them in the same key protects them)"
        );
    }

    #[test]
    fn a_checkpoint_verdict_names_each_problem_with_its_key() {
        let mut report = CheckpointReport {
            checkpoint_at: "2026-12-01T00:00:00Z".to_owned(),
            kid: "kid1".to_owned(),
            signature: SignatureCheck::Valid,
            keys: 3,
            new_keys: 1,
            events: 9,
            problems: Vec::new(),
        };
        assert_eq!(
            checkpoint_verify(&report),
            "intact: the store extends the checkpoint of 2026-12-01T00:00:00Z (3 keys, signed \
             by kid1; 1 keys created since, 9 events read)\n"
        );
        report.signature = SignatureCheck::UnknownKid;
        report.problems = vec![CheckpointProblem {
            client_key: Some("ck_1".to_owned()),
            message: "gone".to_owned(),
            problem: Finding::Missing,
            sequence: Some(4),
        }];
        assert_eq!(
            checkpoint_verify(&report),
            "NOT INTACT against the checkpoint of 2026-12-01T00:00:00Z (1 problems):\n  \
             ck_1 sequence 4 (missing): gone\n"
        );
    }

    #[test]
    fn a_broken_chain_names_the_key_the_sequence_and_the_problem() {
        let report = VerifyReport {
            events: 1,
            legacy_events: 0,
            broken: Some(Broken::new("ck_1", 2, Problem::Deleted)),
        };
        assert_eq!(
            verify(&report),
            "BROKEN at ck_1 sequence 2 (deleted): event 2 is missing: it was deleted"
        );
    }
}
