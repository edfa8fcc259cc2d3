//! The JSON body extractor (`parse_json`) and the strict value deserializer
//! (`from_value`, src/http/strict.rs), compared with serde_json's own parse.
//!
//! Properties:
//! - `parse_json` accepts a body iff serde_json parses it as one value, that value is
//!   an object, and nothing but whitespace follows; it then yields serde_json's value;
//!   every refusal is a 400.
//! - `from_value` into a struct refuses an array (or any non-object) wherever a struct
//!   is expected, at any depth, and otherwise reads what serde_json's derive reads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde_json::Value;
use widget_auth::http::error::{from_value, parse_json};

#[derive(Debug, Deserialize, PartialEq)]
struct Inner {
    #[serde(default)]
    n: Option<i64>,
}

#[derive(Debug, Deserialize, PartialEq)]
struct Probe {
    #[serde(default)]
    one: Option<Inner>,
    #[serde(default)]
    many: Option<Vec<Inner>>,
}

fuzz_target!(|data: &[u8]| {
    let ours = parse_json::<Value>(data);
    let theirs = serde_json::from_slice::<Value>(data);
    match (&ours, &theirs) {
        (Ok(a), Ok(b)) => {
            assert!(a.is_object(), "accepted a non-object: {a}");
            assert_eq!(a, b);
        }
        (Ok(a), Err(e)) => panic!("accepted {a} that serde_json refuses: {e}"),
        (Err(e), Ok(b)) => {
            assert!(!b.is_object(), "refused the object {b}: {}", e.message);
        }
        (Err(_), Err(_)) => {}
    }
    if let Err(e) = &ours {
        assert_eq!(e.status.as_u16(), 400, "{}", e.message);
    }
    // The typed path refuses exactly what the untyped one does at the top level.
    let typed = parse_json::<serde_json::Map<String, Value>>(data);
    assert_eq!(typed.is_ok(), ours.is_ok());

    let Ok(value) = theirs else { return };
    let strict = from_value::<Probe>(value.clone());
    let expected = expected_probe(&value);
    match (&strict, &expected) {
        (Ok(a), Some(b)) => assert_eq!(a, b),
        (Err(e), None) => assert_eq!(e.status.as_u16(), 400),
        (Ok(a), None) => panic!("strict read {value} as {a:?}"),
        (Err(e), Some(b)) => panic!("strict refused {value} ({}), expected {b:?}", e.message),
    }
});

/// What a strict read of `value` as a `Probe` must give, written out by hand.
fn expected_probe(value: &Value) -> Option<Probe> {
    let map = value.as_object()?;
    let one = match map.get("one") {
        None | Some(Value::Null) => None,
        Some(v) => Some(expected_inner(v)?),
    };
    let many = match map.get("many") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(items.iter().map(expected_inner).collect::<Option<_>>()?),
        Some(_) => return None,
    };
    Some(Probe { one, many })
}

fn expected_inner(value: &Value) -> Option<Inner> {
    let map = value.as_object()?;
    let n = match map.get("n") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_i64()?),
    };
    Some(Inner { n })
}
