//! JWT verification: the header pre-check (algorithm, `typ`, `kid`, forbidden members)
//! and the claims checks, on random bytes and on mutations of tokens we minted.
//!
//! At start-up one signing key is generated and a handful of tokens of every kind are
//! minted with it. Input: byte 0 picks the mode, byte 1 a minted token.
//! - 0: the rest is the token text.
//! - 1: the rest is a list of edits (op, position, byte) applied to the minted token.
//! - 2: the rest is a header JSON (`$kid` is replaced by our key's id) put in front of
//!   the minted token's payload and signature.
//! - 3: the rest is a claims JSON (`$now`, `$exp` replaced by the times used to mint)
//!   between the minted token's header and signature.
//!
//! Property: whatever verifies (as any kind, with or without the lifetime checks) has
//! exactly the signing input of a token we minted and yields that token's claims: a
//! token that verifies was minted by us with our key. An unedited minted token verifies
//! as its own kind and no other.
#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use widget_auth::tokens::{Claims, SigningKeys, TokenKind};

const ISS: &str = "widget-auth-fuzz";
const KINDS: [TokenKind; 3] = [TokenKind::Visitor, TokenKind::Session, TokenKind::Refresh];

struct Minted {
    token: String,
    claims: Claims,
}

struct Fixture {
    keys: SigningKeys,
    now: i64,
    minted: Vec<Minted>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let pem = SigningKeys::generate_pem().expect("generate a key");
        let keys = SigningKeys::from_pem(&pem).expect("parse the key");
        // jsonwebtoken also checks exp/nbf against the system clock, so mint for now.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs() as i64;
        let mut minted = Vec::new();
        for kind in KINDS {
            for full in [false, true] {
                let claims = claims(kind, now, full);
                let token = keys.mint(&claims).expect("mint");
                minted.push(Minted { token, claims });
            }
        }
        Fixture { keys, now, minted }
    })
}

fn claims(kind: TokenKind, now: i64, full: bool) -> Claims {
    let refresh = kind == TokenKind::Refresh;
    Claims {
        iss: ISS.to_owned(),
        aud: kind.audience().to_owned(),
        sub: "visitor-1".to_owned(),
        iat: now,
        nbf: now,
        exp: now + 86_400,
        jti: format!("jti-{kind:?}-{full}"),
        ck: "ck_abcdefghijklmnopqrst".to_owned(),
        kind,
        ver: 3,
        origin: full.then(|| "https://shop.example".to_owned()),
        guest: full.then_some(false),
        name: full.then(|| "Ada \"Lovelace\" ✓".to_owned()),
        email: full.then(|| "ada@example.com".to_owned()),
        fam: refresh.then(|| "fam-1".to_owned()),
        fst: refresh.then_some(now),
        gen: refresh.then_some(i64::from(full)),
    }
}

fn signing_input(token: &str) -> &str {
    token.rsplit_once('.').map_or(token, |(input, _)| input)
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let [mode, pick, rest @ ..] = data else {
        return;
    };
    let base = &f.minted[*pick as usize % f.minted.len()];
    let (header, payload, signature) = {
        let mut parts = base.token.split('.');
        let (Some(h), Some(p), Some(s)) = (parts.next(), parts.next(), parts.next()) else {
            unreachable!("minted tokens have three segments");
        };
        (h, p, s)
    };
    let candidate: Vec<u8> = match mode % 4 {
        0 => rest.to_vec(),
        1 => {
            if rest.is_empty() {
                check_own(f, base);
            }
            edit(base.token.as_bytes(), rest)
        }
        2 => {
            let Ok(text) = std::str::from_utf8(rest) else {
                return;
            };
            let json = text.replace("$kid", f.keys.active_kid());
            format!("{}.{payload}.{signature}", URL_SAFE_NO_PAD.encode(json)).into_bytes()
        }
        _ => {
            let Ok(text) = std::str::from_utf8(rest) else {
                return;
            };
            let json = text
                .replace("$now", &f.now.to_string())
                .replace("$exp", &(f.now + 86_400).to_string());
            format!("{header}.{}.{signature}", URL_SAFE_NO_PAD.encode(json)).into_bytes()
        }
    };
    let Ok(token) = std::str::from_utf8(&candidate) else {
        return;
    };
    for kind in KINDS {
        let results = [
            f.keys.verify(token, kind, ISS, f.now),
            f.keys.verify_ignoring_lifetime(token, kind, ISS),
        ];
        for claims in results.into_iter().flatten() {
            let ours = f
                .minted
                .iter()
                .find(|m| signing_input(&m.token) == signing_input(token))
                .unwrap_or_else(|| {
                    panic!("a token we never minted verified as {kind:?}: {token:?}")
                });
            assert_eq!(
                claims, ours.claims,
                "verified claims differ from the minted ones"
            );
            assert_eq!(claims.kind, kind);
        }
        // Another issuer is never accepted, whatever the token.
        assert!(f.keys.verify(token, kind, "someone-else", f.now).is_err());
    }
});

/// An unedited minted token verifies as its kind only.
fn check_own(f: &Fixture, m: &Minted) {
    for kind in KINDS {
        let result = f.keys.verify(&m.token, kind, ISS, f.now);
        if kind == m.claims.kind {
            assert_eq!(result.as_ref(), Ok(&m.claims), "our own token was refused");
        } else {
            assert!(
                result.is_err(),
                "a {:?} token passed as {kind:?}",
                m.claims.kind
            );
        }
    }
}

/// Applies (op, position, byte) triples: 0 replaces, 1 inserts, 2 deletes.
fn edit(token: &[u8], script: &[u8]) -> Vec<u8> {
    let mut out = token.to_vec();
    for step in script.chunks(3) {
        let [op, pos, byte] = [0, 1, 2].map(|i| step.get(i).copied().unwrap_or(0));
        let at = if out.is_empty() {
            0
        } else {
            pos as usize * out.len() / 256
        };
        match op % 3 {
            0 if !out.is_empty() => out[at] = byte,
            1 => out.insert(at, byte),
            2 if !out.is_empty() => {
                out.remove(at);
            }
            _ => {}
        }
    }
    out
}
