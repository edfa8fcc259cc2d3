//! The event upcasters (`domain::events::upcasters`, applied by src/store/rows.rs on
//! every read of ours and by cqrs-es on its loads) and the decode that follows them.
//!
//! Input: lines. Line 0 is the event type, line 1 the stored `event_version`, the rest
//! the stored payload (JSON; skipped when it is not).
//! Properties: upcasting never panics; it is idempotent (upcasting an upcast event
//! changes nothing); an upcast event is at a version no upcaster takes; a type or
//! version no upcaster takes passes through untouched; decoding an event and decoding
//! its upcast form give the same result, and an event that needs no upcasting decodes
//! exactly as the store's fast path (serde_json on the payload) does.
#![no_main]

use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use domain::ClientKeyEvent;
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use std::sync::LazyLock;
use widget_auth::store::RecordedEvent;

static UPCASTERS: LazyLock<Vec<Box<dyn EventUpcaster>>> = LazyLock::new(domain::events::upcasters);

fn upcast(event: SerializedEvent) -> SerializedEvent {
    UPCASTERS.iter().fold(event, |event, upcaster| {
        if upcaster.can_upcast(&event.event_type, &event.event_version) {
            upcaster.upcast(event)
        } else {
            event
        }
    })
}

fn needs_upcast(event: &SerializedEvent) -> bool {
    UPCASTERS
        .iter()
        .any(|u| u.can_upcast(&event.event_type, &event.event_version))
}

fn metadata() -> Value {
    json!({"at": "2026-01-01T00:00:00Z", "actor": "fuzz", "request_id": "r-1"})
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.splitn(3, '\n');
    let (Some(event_type), Some(event_version), Some(payload)) =
        (lines.next(), lines.next(), lines.next())
    else {
        return;
    };
    let Ok(payload) = serde_json::from_str::<Value>(payload) else {
        return;
    };
    let stored = SerializedEvent {
        aggregate_id: "ck_abcdefghijklmnopqrst".to_owned(),
        sequence: 1,
        aggregate_type: "ClientKey".to_owned(),
        event_type: event_type.to_owned(),
        event_version: event_version.to_owned(),
        payload,
        metadata: metadata(),
    };
    let needed = needs_upcast(&stored);
    let once = upcast(stored.clone());
    assert!(
        !needs_upcast(&once),
        "still upcastable after upcasting: {}",
        once.event_version
    );
    let twice = upcast(once.clone());
    assert_eq!(twice.payload, once.payload, "upcasting is not idempotent");
    assert_eq!(twice.event_version, once.event_version);
    assert_eq!(once.event_type, stored.event_type);
    assert_eq!(once.metadata, stored.metadata);
    if !needed {
        assert_eq!(
            once.payload, stored.payload,
            "an event no upcaster takes was changed"
        );
        assert_eq!(once.event_version, stored.event_version);
    }

    let decoded = RecordedEvent::decode(stored.clone());
    let decoded_once = RecordedEvent::decode(once);
    match (&decoded, &decoded_once) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(_), Err(_)) => {}
        _ => panic!("decode of an event and of its upcast form disagree"),
    }
    if !needed {
        // The store's fast path parses the stored text; a `Value`'s text is its JSON.
        let fast = serde_json::from_str::<ClientKeyEvent>(&stored.payload.to_string());
        assert_eq!(fast.ok(), decoded.as_ref().ok().map(|r| r.event.clone()));
    }
});
