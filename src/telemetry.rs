//! Logging setup. Everything the server says goes through `tracing`; the level comes
//! from `RUST_LOG` (default `info`), the format from `WIDGET_AUTH_LOG_FORMAT` (`json`
//! for log shippers, human-readable otherwise).

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::span::Record;
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let json = std::env::var("WIDGET_AUTH_LOG_FORMAT").is_ok_and(|v| v == "json");
    let registry = tracing_subscriber::registry().with(filter);
    // `try_init`: a second call (tests) keeps the first subscriber.
    let _ = if json {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(JsonSpanFields)
                    .event_format(JsonLines),
            )
            .try_init()
    } else {
        registry.with(tracing_subscriber::fmt::layer()).try_init()
    };
}

/// The JSON log format's lines, as tracing-subscriber's `.json()` writes them (`timestamp`,
/// `level`, `fields`, `target`, the current `span` and the `spans` from the root), written
/// straight out.
///
/// tracing-subscriber's own formatter parses each span's stored fields back into a map of
/// `serde_json` values and serializes that again, for the current span and once more for
/// each span of the list. Under callgrind the one info line an admin command logs
/// ("command committed", inside the request and command spans) cost 36,000 instructions,
/// a tenth of the whole command. [`JsonSpanFields`] has already written each span's fields
/// as one JSON object, so they are copied as they are, with the span's `name` added last
/// (where tracing-subscriber puts it too). A field recorded into a span again after
/// creation appears twice, the later value last, which JSON parsers keep; nothing in the
/// server records into a span after making it.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLines;

impl<S> FormatEvent<S, JsonSpanFields> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonSpanFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // Records from the `log` crate carry their real target and level as fields.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        writer.write_str("{\"timestamp\":\"")?;
        SystemTime.format_time(&mut writer)?;
        write!(writer, "\",\"level\":\"{}\",\"fields\":", meta.level())?;
        let mut fields = JsonObject::new(&mut writer, true);
        event.record(&mut fields);
        fields.finish()?;
        writer.write_str(",\"target\":")?;
        write_json_string(&mut writer, meta.target())?;
        let current = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current());
        if let Some(current) = current {
            writer.write_str(",\"span\":")?;
            write_span(&mut writer, &current)?;
            writer.write_str(",\"spans\":[")?;
            for (i, span) in current.scope().from_root().enumerate() {
                if i > 0 {
                    writer.write_char(',')?;
                }
                write_span(&mut writer, &span)?;
            }
            writer.write_char(']')?;
        }
        writer.write_str("}\n")
    }
}

/// One span as `{<its fields>,"name":"<its name>"}`.
fn write_span<S>(
    writer: &mut Writer<'_>,
    span: &tracing_subscriber::registry::SpanRef<'_, S>,
) -> fmt::Result
where
    S: for<'a> LookupSpan<'a>,
{
    let extensions = span.extensions();
    let fields = extensions
        .get::<FormattedFields<JsonSpanFields>>()
        .map(|formatted| formatted.fields.as_str())
        // What `format_fields` writes is always an object; anything else is left out
        // rather than let it break the line.
        .and_then(|fields| fields.strip_prefix('{')?.strip_suffix('}'))
        .unwrap_or("");
    writer.write_char('{')?;
    writer.write_str(fields)?;
    writer.write_str(if fields.is_empty() { "" } else { "," })?;
    writer.write_str("\"name\":")?;
    write_json_string(writer, span.name())?;
    writer.write_char('}')
}

/// The JSON log format's span fields, written straight out as one JSON object.
///
/// tracing-subscriber's own `JsonFields` gathers them into a map of `serde_json` values
/// and serializes that through `fmt`, a character at a time: 6,000 instructions (under
/// callgrind) for the request span's three short fields, on every request at the
/// default level, about a sixth of what the config endpoint costs in all. The event
/// formatter parses what this writes back when a line is logged inside the span, so it
/// must stay one valid JSON object; a field recorded again is appended and wins, as a
/// JSON parser keeps the last of repeated keys.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonSpanFields;

impl<'writer> FormatFields<'writer> for JsonSpanFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        // The layer hands over an empty `String` for each span: written into piece by
        // piece it would grow five or six times for the request span's fields (about
        // 750 instructions a request), so they are gathered in this thread's scratch
        // string, which keeps its capacity, and copied over in one go.
        let written = SCRATCH.with(|scratch| {
            let mut scratch = scratch.try_borrow_mut().ok()?;
            scratch.clear();
            let mut object = JsonObject::new(&mut *scratch, true);
            fields.record(&mut object);
            let written = object.finish().and_then(|()| writer.write_str(&scratch));
            // One span with huge fields should not keep its size here for good.
            if scratch.capacity() > SCRATCH_KEPT {
                *scratch = String::new();
            }
            Some(written)
        });
        // Only when a field's formatting logged a span of its own on this thread, which
        // is already using the scratch string.
        written.unwrap_or_else(|| {
            let mut object = JsonObject::new(&mut writer, true);
            fields.record(&mut object);
            object.finish()
        })
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &Record<'_>,
    ) -> fmt::Result {
        if current.fields.pop() != Some('}') {
            // Never written by `format_fields` (which always closes the object): start
            // over rather than extend something that is not JSON.
            current.fields.clear();
            return self.format_fields(current.as_writer(), fields);
        }
        let empty = current.fields.ends_with('{');
        let mut writer = current.as_writer();
        let mut object = JsonObject {
            writer: &mut writer,
            first: empty,
            result: Ok(()),
        };
        fields.record(&mut object);
        object.finish()
    }
}

/// The most [`SCRATCH`] keeps between spans, in bytes.
const SCRATCH_KEPT: usize = 4096;

thread_local! {
    static SCRATCH: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Writes `"name":value` pairs; opened by [`JsonObject::new`], closed by `finish`.
///
/// Generic over where it writes: the span fields go straight into the scratch `String`,
/// where each piece is an inlined push rather than a call through `Writer`'s
/// `dyn fmt::Write` (about 1,000 instructions a request for the request span's fields).
struct JsonObject<'a, W: fmt::Write> {
    writer: &'a mut W,
    first: bool,
    result: fmt::Result,
}

impl<'a, W: fmt::Write> JsonObject<'a, W> {
    fn new(writer: &'a mut W, first: bool) -> Self {
        let result = writer.write_char('{');
        Self {
            writer,
            first,
            result,
        }
    }

    fn finish(self) -> fmt::Result {
        self.result?;
        self.writer.write_char('}')
    }

    /// `,"name":` (no comma before the first), then the value `write` puts out.
    fn field(&mut self, field: &Field, write: impl FnOnce(&mut W) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        let comma = if self.first { "" } else { "," };
        self.first = false;
        self.result = (|| {
            self.writer.write_str(comma)?;
            write_json_string(self.writer, field.name())?;
            self.writer.write_char(':')?;
            write(self.writer)
        })();
    }
}

impl<W: fmt::Write> Visit for JsonObject<'_, W> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, |w| write_json_string(w, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, |w| {
            w.write_char('"')?;
            write!(Escaped(w), "{value:?}")?;
            w.write_char('"')
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, |w| write!(w, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, |w| write!(w, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, |w| w.write_str(if value { "true" } else { "false" }));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity: those go as strings, as serde_json's `Value` would
        // refuse them.
        if value.is_finite() {
            self.field(field, |w| write!(w, "{value}"));
        } else {
            self.field(field, |w| write!(w, "\"{value}\""));
        }
    }
}

fn write_json_string(writer: &mut impl fmt::Write, text: &str) -> fmt::Result {
    writer.write_char('"')?;
    Escaped(writer).write_str(text)?;
    writer.write_char('"')
}

/// The bytes a JSON string cannot hold as they are: control characters, quote, backslash.
/// A table, because the scan runs over every byte of every span field.
static ESCAPED: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = true;
        byte += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// Passes text through with JSON string escaping: quote, backslash and control characters.
/// Plain runs are written whole: most text has nothing to escape.
struct Escaped<'a, W: fmt::Write>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaped<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut rest = text;
        while let Some(at) = rest.bytes().position(|b| ESCAPED[usize::from(b)]) {
            self.0.write_str(&rest[..at])?;
            match rest.as_bytes()[at] {
                b'"' => self.0.write_str("\\\"")?,
                b'\\' => self.0.write_str("\\\\")?,
                b'\n' => self.0.write_str("\\n")?,
                b'\r' => self.0.write_str("\\r")?,
                b'\t' => self.0.write_str("\\t")?,
                control => write!(self.0, "\\u{control:04x}")?,
            }
            rest = &rest[at + 1..];
        }
        self.0.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use serde_json::Value;
    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::layer::SubscriberExt;

    use super::{JsonLines, JsonSpanFields};

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Self;

        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }

    /// Runs `log` under the server's JSON format ([`JsonLines`] with [`JsonSpanFields`])
    /// and returns its lines, parsed.
    fn logged(log: impl FnOnce()) -> Vec<Value> {
        let lines = Lines::default();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .fmt_fields(JsonSpanFields)
                .event_format(JsonLines)
                .with_writer(lines.clone()),
        );
        tracing::subscriber::with_default(subscriber, log);
        parsed(&lines)
    }

    /// The same under tracing-subscriber's own JSON format, to compare with.
    fn logged_by_tracing_subscriber(log: impl FnOnce()) -> Vec<Value> {
        let lines = Lines::default();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(lines.clone()),
        );
        tracing::subscriber::with_default(subscriber, log);
        parsed(&lines)
    }

    fn parsed(lines: &Lines) -> Vec<Value> {
        let bytes = lines.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).expect("each line is JSON"))
            .collect()
    }

    /// What the server logs in a command: a line inside a span inside another, fields of
    /// every kind, text that needs escaping, and a line outside any span.
    fn a_command_logs() {
        let request = tracing::info_span!(
            "request",
            method = "POST",
            path = "/internal/v1/client-keys/{id}/commands",
            request_id = "4f2a-1",
        );
        let _request = request.enter();
        let command = tracing::info_span!("command", client_key = "ck_1", request_id = %"4f2a-1");
        command.in_scope(|| {
            tracing::info!(version = 7u64, "command committed");
            tracing::warn!(delta = -2i64, ok = false, share = 0.25f64, note = ?"a \"b\"\n", "odd {}", 1);
        });
        drop(_request);
        tracing::error!(reason = %"tab\there", "outside");
    }

    #[test]
    fn lines_match_tracing_subscribers_own_json_format_but_the_timestamp() {
        // Given the same events logged by the server's formatter and by tracing-subscriber's
        let ours = logged(a_command_logs);
        let theirs = logged_by_tracing_subscriber(a_command_logs);
        // Then every line has the same keys and values, the timestamps aside
        assert_eq!(ours.len(), 3);
        assert_eq!(ours.len(), theirs.len());
        for (mut ours, mut theirs) in ours.into_iter().zip(theirs) {
            let (a, b) = (ours["timestamp"].take(), theirs["timestamp"].take());
            assert!(
                a.as_str()
                    .is_some_and(|t| t.ends_with('Z') && t.len() == b.as_str().unwrap().len()),
                "{a} vs {b}"
            );
            assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn a_line_inside_two_spans_names_the_inner_one_and_lists_both_from_the_root() {
        // When a command logs inside the request span
        let lines = logged(a_command_logs);
        // Then its line has the message, the fields, the command span and both spans
        let line = &lines[0];
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["target"], module_path!());
        assert_eq!(line["fields"]["message"], "command committed");
        assert_eq!(line["fields"]["version"], 7);
        assert_eq!(line["span"]["name"], "command");
        assert_eq!(line["span"]["client_key"], "ck_1");
        assert_eq!(line["spans"][0]["name"], "request");
        assert_eq!(line["spans"][0]["request_id"], "4f2a-1");
        assert_eq!(line["spans"][1]["name"], "command");
        // And a line outside any span has neither
        assert_eq!(lines[2]["fields"]["reason"], "tab\there");
        assert!(lines[2].get("span").is_none() && lines[2].get("spans").is_none());
    }

    #[test]
    fn span_fields_reach_the_lines_logged_inside_with_awkward_text_escaped() {
        // Given a span whose fields hold quotes, backslashes, a newline and a control byte
        let awkward = "say \"hi\"\\\n\u{1}end";
        let lines = logged(|| {
            let span = tracing::info_span!(
                "request",
                method = %"GET",
                path = awkward,
                count = 7u64,
                delta = -3i64,
                ok = true,
                share = 0.5f64,
            );
            // When a line is logged inside it
            span.in_scope(|| tracing::info!("inside"));
        });
        // Then the line carries every field with its value and type intact
        let span = &lines[0]["span"];
        assert_eq!(span["name"], "request");
        assert_eq!(span["method"], "GET");
        assert_eq!(span["path"], awkward);
        assert_eq!(span["count"], 7);
        assert_eq!(span["delta"], -3);
        assert_eq!(span["ok"], true);
        assert_eq!(span["share"], 0.5);
    }

    #[test]
    fn fields_recorded_later_join_the_object_and_replace_earlier_values() {
        // Given a span with one field set at creation and two left empty
        let lines = logged(|| {
            let span = tracing::info_span!(
                "request",
                request_id = "r-1",
                status = tracing::field::Empty,
                note = tracing::field::Empty,
            );
            // When they are recorded, one of them twice, and a line is logged inside
            span.record("status", 404u64);
            span.record("note", "first");
            span.record("note", "second");
            span.in_scope(|| tracing::info!("inside"));
        });
        // Then the line sees the creation field, the recorded one and the last value
        let span = &lines[0]["span"];
        assert_eq!(span["request_id"], "r-1");
        assert_eq!(span["status"], 404);
        assert_eq!(span["note"], "second");
    }

    #[test]
    fn a_span_with_no_fields_at_creation_takes_recorded_ones() {
        // Given a span created with only empty fields
        let lines = logged(|| {
            let span = tracing::info_span!("work", n = tracing::field::Empty);
            // When one is recorded
            span.record("n", 3u64);
            span.in_scope(|| tracing::info!("inside"));
        });
        // Then it shows
        assert_eq!(lines[0]["span"]["n"], 3);
        assert_eq!(lines[0]["span"]["name"], "work");
    }

    #[test]
    fn a_span_larger_than_the_scratch_keeps_is_written_whole_and_the_next_one_too() {
        // Given a span whose field is larger than the scratch string keeps, then a small one
        let big = "x".repeat(3 * super::SCRATCH_KEPT);
        let lines = logged(|| {
            let span = tracing::info_span!("big", text = big.as_str());
            span.in_scope(|| tracing::info!("inside"));
            let span = tracing::info_span!("small", text = "y");
            span.in_scope(|| tracing::info!("inside"));
        });
        // Then both are logged in full
        assert_eq!(lines[0]["span"]["text"], big.as_str());
        assert_eq!(lines[1]["span"]["text"], "y");
        assert_eq!(lines[1]["span"]["name"], "small");
    }
}
