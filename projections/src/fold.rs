//! The one fold of a key's events into its view, written once: the start-up replay, the
//! feed's and the command service's reloads, the auditors' state at a point in time and
//! [`ClientKeyView::fold`] all push events through a [`Fold`], and
//! [`ClientKeyView::apply`] takes the same step for one event. Pure: no I/O, no clock.

use chrono::{DateTime, Utc};
use domain::aggregate::KeyState;

use crate::view::{ClientKeyView, StoredEvent};

/// One key's history being folded, event by event, in sequence order. Events are taken
/// by value, so a streamed replay never clones a payload; the view (and its config body)
/// is rendered once, by [`Fold::finish`].
#[derive(Debug, Default)]
pub struct Fold {
    progress: Progress,
}

#[derive(Debug, Default)]
#[expect(
    clippy::large_enum_variant,
    reason = "one per key being folded, held on the stack, never in a collection"
)]
enum Progress {
    /// No event yet.
    #[default]
    Empty,
    /// The history started with a creation; this is the state after the last event.
    Created(Folded),
    /// The history does not start with a creation: it folds into no view, whatever follows.
    NotCreated,
}

/// A created key's state as of some event, with what its view shows about that event.
#[derive(Debug, Clone)]
pub(crate) struct Folded {
    pub(crate) state: KeyState,
    pub(crate) version: u64,
    pub(crate) updated_at: Option<DateTime<Utc>>,
    pub(crate) link: Option<String>,
}

impl Folded {
    /// The step every fold takes for the event after the one folded so far. A missing
    /// time keeps the last one known; the link is always the newest event's own.
    pub(crate) fn step(&mut self, stored: StoredEvent) {
        self.state.apply(stored.event);
        self.version = stored.sequence;
        self.updated_at = stored.at.or(self.updated_at);
        self.link = stored.link;
    }
}

impl Fold {
    pub fn new() -> Self {
        Self::default()
    }

    /// Folds the next event of the key. The caller keeps the order (by sequence);
    /// after a history that did not start with a creation, events are ignored.
    pub fn push(&mut self, stored: StoredEvent) {
        match &mut self.progress {
            Progress::Created(folded) => folded.step(stored),
            Progress::Empty => {
                self.progress = match KeyState::created(stored.event) {
                    Some(state) => Progress::Created(Folded {
                        state,
                        version: stored.sequence,
                        updated_at: stored.at,
                        link: stored.link,
                    }),
                    None => Progress::NotCreated,
                }
            }
            Progress::NotCreated => {}
        }
    }

    /// No event was pushed yet.
    pub fn is_empty(&self) -> bool {
        matches!(self.progress, Progress::Empty)
    }

    /// The view of everything pushed; `None` when nothing was, or the history does not
    /// start with a creation.
    pub fn finish(self) -> Option<ClientKeyView> {
        match self.progress {
            Progress::Created(folded) => Some(ClientKeyView::from_folded(folded)),
            Progress::Empty | Progress::NotCreated => None,
        }
    }
}

impl ClientKeyView {
    /// Folds a key's history (in sequence order) into a view; `None` when the history
    /// does not start with a creation. The body is rendered once, at the end. Borrows
    /// the history, so each event is cloned: streamed replays push into a [`Fold`] instead.
    pub fn fold<'a>(events: impl IntoIterator<Item = &'a StoredEvent>) -> Option<Self> {
        let mut fold = Fold::new();
        for stored in events {
            fold.push(stored.clone());
        }
        fold.finish()
    }

    /// The view at the end of a [`Fold`].
    pub(crate) fn from_folded(folded: Folded) -> Self {
        Self::render(folded.state, folded.version, folded.updated_at, folded.link)
    }

    /// The view after one more event, by the same step as [`Fold::push`]. Pure: the
    /// caller decides whether `event` is the next one in sequence.
    pub fn apply(&self, stored: &StoredEvent) -> Self {
        let mut folded = Folded {
            state: self.state().clone(),
            version: self.version(),
            updated_at: self.updated_at(),
            link: None,
        };
        folded.step(stored.clone());
        Self::from_folded(folded)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use domain::{
        AllowList, ClientKeyEvent, ClientKeyId, OriginPattern, PublicKey, SecretKey, Text,
        TokenPolicy, WidgetConfig,
    };
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    fn at(second: u32) -> Option<DateTime<Utc>> {
        Some(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, second).unwrap())
    }

    fn id() -> ClientKeyId {
        ClientKeyId::generate(&mut StdRng::seed_from_u64(1))
    }

    fn stored(sequence: u64, event: ClientKeyEvent, at: Option<DateTime<Utc>>) -> StoredEvent {
        StoredEvent {
            aggregate_id: id().as_str().to_owned(),
            sequence,
            event,
            at,
            link: Some(format!("link-{sequence}")),
        }
    }

    fn origins(origin: &str) -> AllowList {
        AllowList::new(vec![OriginPattern::parse(origin).expect("valid")])
    }

    fn created() -> ClientKeyEvent {
        ClientKeyEvent::ClientKeyCreated {
            id: id(),
            name: Text::parse("Acme Support").expect("valid"),
            public_key: PublicKey::generate(&mut StdRng::seed_from_u64(10)),
            secret_key: SecretKey::generate(&mut StdRng::seed_from_u64(20)).fingerprint(),
            origins: origins("https://acme.test"),
            config: WidgetConfig::default(),
            token_policy: TokenPolicy::default(),
            at: at(0).expect("valid time"),
        }
    }

    fn origins_changed(origin: &str) -> ClientKeyEvent {
        ClientKeyEvent::OriginsChanged {
            origins: origins(origin),
        }
    }

    #[test]
    fn an_empty_history_folds_into_no_view() {
        let fold = Fold::new();
        assert!(fold.is_empty());
        assert!(fold.finish().is_none());
    }

    #[test]
    fn a_history_folds_into_the_state_version_time_and_link_of_its_last_event() {
        let mut fold = Fold::new();
        fold.push(stored(1, created(), at(1)));
        fold.push(stored(2, origins_changed("https://b.test"), at(2)));
        fold.push(stored(3, origins_changed("https://c.test"), at(3)));
        let view = fold.finish().expect("created");
        assert_eq!(view.version(), 3);
        assert_eq!(view.updated_at(), at(3));
        assert_eq!(view.link(), Some("link-3"));
        assert_eq!(view.state().origins, origins("https://c.test"));
    }

    #[test]
    fn an_event_without_a_time_keeps_the_last_time_known() {
        let mut fold = Fold::new();
        fold.push(stored(1, created(), at(1)));
        fold.push(stored(2, origins_changed("https://b.test"), None));
        assert_eq!(fold.finish().expect("created").updated_at(), at(1));
    }

    #[test]
    fn a_history_that_does_not_start_with_a_creation_folds_into_no_view() {
        let mut fold = Fold::new();
        fold.push(stored(1, origins_changed("https://b.test"), at(1)));
        fold.push(stored(2, created(), at(2)));
        assert!(fold.finish().is_none());
    }

    #[test]
    fn folding_a_history_and_applying_its_events_one_by_one_agree() {
        let history = [
            stored(1, created(), at(1)),
            stored(2, origins_changed("https://b.test"), at(2)),
        ];
        let folded = ClientKeyView::fold(&history).expect("created");
        let applied = ClientKeyView::fold(&history[..1])
            .expect("created")
            .apply(&history[1]);
        assert_eq!(folded.version(), applied.version());
        assert_eq!(folded.link(), applied.link());
        assert_eq!(folded.updated_at(), applied.updated_at());
        assert_eq!(folded.config_body(), applied.config_body());
        assert_eq!(folded.etag(), applied.etag());
    }
}
