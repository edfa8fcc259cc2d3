//! Property tests of the single-use rules against the real ledger (SQLite in a temp
//! dir): for any interleaving of exchanges and refreshes, sequential or racing, a visitor
//! token is exchanged once, a refresh token has exactly one successor, a retry within the
//! grace gets that same successor, and any other replay revokes the family for good.
//! The outcomes are read through the same rule the refresh handler applies
//! ([`sessions::after_spend`]), and a reuse is answered with the same revocation.

use std::collections::HashMap;
use std::path::PathBuf;

use futures::future::join_all;
use proptest::prelude::*;

use super::{RecordedToken, Spend, TokenUse};
use crate::sessions::{self, Refresh, REFRESH_RETRY_GRACE_MS};
use crate::store::Store;
use crate::tokens::{Claims, TokenKind};

const START_MS: i64 = 1_800_000_000_000;
const FAMILIES: u8 = 2;

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("widget-auth-ledger-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Debug, Clone)]
enum Step {
    /// `copies` requests present the same visitor token at once.
    Exchange { token: u8, copies: u8, gap_ms: i64 },
    /// `copies` requests present the same refresh token of a family at once: its head
    /// (`back` 0), the token spent last (1) or an older one.
    Refresh {
        family: u8,
        back: u8,
        copies: u8,
        gap_ms: i64,
    },
}

fn gap() -> impl Strategy<Value = i64> {
    // Within the retry grace, just past it, or long after.
    prop_oneof![0i64..3_000, 9_000i64..12_000, 60_000i64..600_000]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        1 => (0u8..4, 1u8..4, gap())
            .prop_map(|(token, copies, gap_ms)| Step::Exchange { token, copies, gap_ms }),
        3 => (0..FAMILIES, prop_oneof![3 => Just(0u8), 2 => Just(1u8), 1 => 2u8..5], 1u8..4, gap())
            .prop_map(|(family, back, copies, gap_ms)| Step::Refresh { family, back, copies, gap_ms }),
    ]
}

/// A refresh family as the rules say it must stand.
#[derive(Debug, Default)]
struct Model {
    /// Every token of the family, in generation order (generation = index); the last
    /// is the head.
    tokens: Vec<String>,
    /// The token spent last, when, and the successor it got.
    spent: Option<(String, i64)>,
    revoked: bool,
}

fn refresh_claims(family: &str, jti: &str, generation: i64, now: i64) -> Claims {
    Claims {
        iss: "widget-auth".to_owned(),
        aud: TokenKind::Refresh.audience().to_owned(),
        sub: "visitor-1".to_owned(),
        iat: now,
        nbf: now,
        exp: now + 3600,
        jti: jti.to_owned(),
        ck: "ck_abcdefghijklmnopqrst".to_owned(),
        kind: TokenKind::Refresh,
        ver: 1,
        origin: Some("https://acme.test".to_owned()),
        guest: Some(true),
        name: None,
        email: None,
        fam: Some(family.to_owned()),
        fst: Some(START_MS / 1000),
        gen: Some(generation),
    }
}

/// One refresh request as the handler makes it: spend, read the outcome by the rule,
/// revoke on reuse. Returns the proposed successor and what the request got.
async fn refresh(
    store: &Store,
    presented: &Claims,
    proposal: String,
    now_ms: i64,
) -> (String, Refresh) {
    let family = presented.fam.clone().expect("refresh tokens have a family");
    let now = now_ms.div_euclid(1000);
    let successor = RecordedToken {
        jti: proposal.clone(),
        generation: presented.gen.unwrap_or(0) + 1,
        iat: now,
        exp: now + 3600,
        ver: 1,
    };
    let outcome = store
        .spend_refresh_token(&Spend {
            client_key: &presented.ck,
            seen_version: 1,
            family: &family,
            spent_jti: &presented.jti,
            successor: &successor,
            now_ms,
            ends_at: successor.exp.max(presented.exp),
        })
        .await
        .expect("spend");
    let decided = sessions::after_spend(presented, outcome, now_ms);
    if let Refresh::ReuseDetected(revocation) = &decided {
        store
            .revoke_refresh_family(
                &family,
                revocation.revoked_at,
                revocation.generation,
                revocation.ends_at,
            )
            .await
            .expect("revoke");
    }
    (proposal, decided)
}

async fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let dir = TempDir::new();
    let store = Store::open(None, &dir.0).await.expect("open SQLite");
    store.migrate().await.expect("migrate");

    let mut now_ms = START_MS;
    let mut first_use: HashMap<String, i64> = HashMap::new();
    let mut families: Vec<Model> = (0..FAMILIES)
        .map(|f| Model {
            tokens: vec![format!("fam{f}-start")],
            ..Model::default()
        })
        .collect();
    let mut proposals = 0u64;

    for step in steps {
        match step {
            Step::Exchange {
                token,
                copies,
                gap_ms,
            } => {
                now_ms += gap_ms;
                let jti = format!("visitor-{token}");
                let uses = join_all(
                    (0..copies)
                        .map(|_| store.use_token(&jti, "visitor", now_ms, now_ms / 1000 + 600)),
                )
                .await
                .into_iter()
                .collect::<Result<Vec<_>, _>>()
                .expect("use_token");
                let firsts = uses.iter().filter(|u| **u == TokenUse::First).count();
                match first_use.get(&jti) {
                    Some(at) => {
                        prop_assert_eq!(firsts, 0, "{} exchanged twice", jti);
                        for used in &uses {
                            prop_assert_eq!(*used, TokenUse::Again { used_at_ms: *at });
                        }
                    }
                    None => {
                        prop_assert_eq!(firsts, 1, "{} raced: {:?}", jti, uses);
                        first_use.insert(jti.clone(), now_ms);
                    }
                }
                for used in uses {
                    prop_assert!(
                        sessions::first_exchange(used).is_ok() == (used == TokenUse::First)
                    );
                }
            }
            Step::Refresh {
                family,
                back,
                copies,
                gap_ms,
            } => {
                now_ms += gap_ms;
                let name = format!("fam{family}");
                let model = &mut families[usize::from(family)];
                let Some(index) = model.tokens.len().checked_sub(1 + usize::from(back)) else {
                    continue;
                };
                let presented =
                    refresh_claims(&name, &model.tokens[index], index as i64, now_ms / 1000);
                let requests = (0..copies).map(|_| {
                    proposals += 1;
                    refresh(&store, &presented, format!("{name}-p{proposals}"), now_ms)
                });
                let results = join_all(requests.collect::<Vec<_>>()).await;

                let is_head = index == model.tokens.len() - 1;
                let in_grace = model.spent.as_ref().is_some_and(|(jti, at)| {
                    *jti == presented.jti && now_ms - at <= REFRESH_RETRY_GRACE_MS
                });
                let rotated: Vec<&String> = results
                    .iter()
                    .filter(|(_, r)| *r == Refresh::Rotated)
                    .map(|(p, _)| p)
                    .collect();
                if model.revoked {
                    for (_, r) in &results {
                        prop_assert_eq!(r, &Refresh::Revoked);
                    }
                } else if is_head {
                    // Exactly one of the racers spends the head; the others are retries
                    // within the grace and get the very successor it recorded.
                    prop_assert_eq!(rotated.len(), 1, "{:?}", results);
                    let winner = rotated[0].clone();
                    for (_, r) in &results {
                        match r {
                            Refresh::Rotated => {}
                            Refresh::Retry(token) => prop_assert_eq!(&token.jti, &winner),
                            other => prop_assert!(false, "a racer for the head got {:?}", other),
                        }
                    }
                    model.spent = Some((presented.jti.clone(), now_ms));
                    model.tokens.push(winner);
                } else if in_grace {
                    let head = model.tokens.last().expect("a head");
                    for (_, r) in &results {
                        match r {
                            Refresh::Retry(token) => prop_assert_eq!(&token.jti, head),
                            other => prop_assert!(false, "a retry in grace got {:?}", other),
                        }
                    }
                } else {
                    // A replay: the family is revoked, and every racer is refused.
                    prop_assert!(rotated.is_empty());
                    for (_, r) in &results {
                        prop_assert!(
                            matches!(r, Refresh::ReuseDetected(_) | Refresh::Revoked),
                            "a replay got {:?}",
                            r
                        );
                    }
                    prop_assert!(results
                        .iter()
                        .any(|(_, r)| matches!(r, Refresh::ReuseDetected(_))));
                    model.revoked = true;
                }
            }
        }
    }

    // The ledger's rows agree with the model.
    for (f, model) in families.iter().enumerate() {
        let record = store
            .refresh_family(&format!("fam{f}"))
            .await
            .expect("read family");
        match record {
            None => prop_assert!(model.tokens.len() == 1 && !model.revoked),
            Some(record) => {
                prop_assert_eq!(record.revoked.is_some(), model.revoked);
                if let Some(head) = record.head {
                    prop_assert_eq!(Some(&head.jti), model.tokens.last());
                    prop_assert_eq!(head.generation as usize, model.tokens.len() - 1);
                }
            }
        }
    }
    Ok(())
}

proptest! {
    // Each case opens and migrates a fresh SQLite store: few cases, many steps each.
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn single_use_rules_hold_for_any_interleaving_of_exchanges_and_refreshes(
        steps in prop::collection::vec(step(), 1..40)
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(run(steps))?;
    }
}
