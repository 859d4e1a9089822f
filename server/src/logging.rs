//! The server's log: text (colours only on a terminal) or JSON lines, our
//! events at `info`, the WebRTC stack quiet unless asked for, and a
//! callsite that repeats itself (a vanished peer makes the stack report
//! every failed send) cut to a few lines and a summary.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::callsite::Identifier;
use tracing::{Level, Metadata};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Filter, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;

/// `--log-format`
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line per event (colours only when stderr is a terminal).
    Text,
    /// One JSON object per event, for log pipelines.
    Json,
}

/// Libraries that are quiet unless `RUST_LOG` names them: their warnings
/// are per-call noise ("conn.remote_addr is empty", "pingAllCandidates
/// called with no candidate pairs"), their info lines per packet or state.
const LIBRARY_LEVELS: &[(&str, &str)] = &[
    ("webrtc", "warn"),
    ("rtc", "warn"),
    ("rtc_dtls", "error"),
    ("rtc_ice", "error"),
    ("rtc_sctp", "warn"),
    ("rtc_srtp", "warn"),
    ("rtc_interceptor", "warn"),
    ("rtc_mdns", "error"),
    ("rtc_turn", "warn"),
    ("rtc_stun", "warn"),
    ("rtc_rtp", "warn"),
    ("rtc_rtcp", "warn"),
    ("rtc_sdp", "warn"),
    ("rtc_shared", "warn"),
    ("rtc_datachannel", "warn"),
    ("rtc_media", "warn"),
    ("hyper", "warn"),
    ("axum", "warn"),
    ("tungstenite", "warn"),
    ("tokio_tungstenite", "warn"),
    ("rustls", "warn"),
];

/// The filter directives for a `RUST_LOG` value (`None`: unset): `info`
/// by default, each library at its quiet level unless the value names it.
pub fn directives(rust_log: Option<&str>) -> String {
    let given = rust_log.map(str::trim).filter(|s| !s.is_empty());
    let mut out = vec![given.unwrap_or("info").to_owned()];
    let named = |target: &str| {
        given.is_some_and(|g| {
            g.split(',').any(|d| {
                d.split('=').next().is_some_and(|t| t.trim() == target || t.trim().starts_with(&format!("{target}::")))
            })
        })
    };
    for (target, level) in LIBRARY_LEVELS {
        if !named(target) {
            out.push(format!("{target}={level}"));
        }
    }
    out.join(",")
}

/// How many events of one callsite pass in a window before the rest are
/// only counted.
pub const REPEATS_SHOWN: u32 = 5;
pub const REPEAT_WINDOW: Duration = Duration::from_secs(10);

/// Counts warnings and errors per callsite, sans IO: at most
/// [`REPEATS_SHOWN`] in each [`REPEAT_WINDOW`] pass; the rest are
/// suppressed and reported by [`RepeatLimiter::take_suppressed`].
#[derive(Debug, Default)]
pub struct RepeatLimiter {
    windows: HashMap<Identifier, Window>,
}

#[derive(Debug)]
struct Window {
    start: Instant,
    shown: u32,
    suppressed: u64,
    name: String,
}

impl RepeatLimiter {
    /// Whether the event at `callsite` may be written now; `name` describes
    /// the callsite for the summary and is only called for a new one.
    pub fn allow(&mut self, now: Instant, callsite: Identifier, name: impl FnOnce() -> String) -> bool {
        let w = self.windows.entry(callsite).or_insert_with(|| Window {
            start: now,
            shown: 0,
            suppressed: 0,
            name: name(),
        });
        if now.saturating_duration_since(w.start) >= REPEAT_WINDOW && w.suppressed == 0 {
            w.start = now;
            w.shown = 0;
        }
        if w.shown < REPEATS_SHOWN {
            w.shown += 1;
            true
        } else {
            w.suppressed += 1;
            false
        }
    }

    /// The callsites whose window is over and that suppressed events, with
    /// their counts; their windows start again.
    pub fn take_suppressed(&mut self, now: Instant) -> Vec<(String, u64)> {
        let mut out = vec![];
        self.windows.retain(|_, w| {
            let over = now.saturating_duration_since(w.start) >= REPEAT_WINDOW;
            if over && w.suppressed > 0 {
                out.push((w.name.clone(), w.suppressed));
                w.suppressed = 0;
                w.start = now;
                w.shown = 0;
                true
            } else {
                !over
            }
        });
        out.sort();
        out
    }
}

/// The per-layer filter that applies a shared [`RepeatLimiter`] to
/// warnings and errors.
#[derive(Clone, Default)]
pub struct Repeats(pub Arc<Mutex<RepeatLimiter>>);

impl<S> Filter<S> for Repeats {
    fn enabled(&self, _: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &tracing::Event<'_>, _: &Context<'_, S>) -> bool {
        let meta = event.metadata();
        if *meta.level() > Level::WARN {
            return true;
        }
        // The name is built once per callsite, not per event of a flood.
        let name = || format!("{} ({}:{})", meta.target(), meta.file().unwrap_or("?"), meta.line().unwrap_or(0));
        match self.0.lock() {
            Ok(mut l) => l.allow(Instant::now(), meta.callsite(), name),
            Err(_) => true,
        }
    }
}

/// Installs the global subscriber. Call [`report_suppressed`] from a task
/// every few seconds so that suppressed repeats are summarised.
pub fn init(format: LogFormat) -> Repeats {
    let filter = EnvFilter::new(directives(std::env::var("RUST_LOG").ok().as_deref()));
    let repeats = Repeats::default();
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => {
            let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
            let _ = registry.with(tracing_subscriber::Layer::with_filter(layer, repeats.clone())).try_init();
        }
        LogFormat::Json => {
            let layer = tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr);
            let _ = registry.with(tracing_subscriber::Layer::with_filter(layer, repeats.clone())).try_init();
        }
    }
    repeats
}

/// Logs one summary line per callsite whose repeats were suppressed.
pub fn report_suppressed(repeats: &Repeats) {
    let over = match repeats.0.lock() {
        Ok(mut l) => l.take_suppressed(Instant::now()),
        Err(_) => return,
    };
    for (callsite, n) in over {
        tracing::warn!(suppressed = n, %callsite, "repeated log lines suppressed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libraries_are_quiet_unless_named() {
        let d = directives(None);
        assert!(d.starts_with("info,"), "{d}");
        assert!(d.contains("rtc_dtls=error") && d.contains("webrtc=warn"), "{d}");
        // RUST_LOG=info alone does not turn the stack's info lines on.
        let d = directives(Some("info"));
        assert!(d.starts_with("info,") && d.contains("webrtc=warn"), "{d}");
        // Naming a library gives the operator what they asked for.
        let d = directives(Some("debug,webrtc=debug,rtc_ice::agent=trace"));
        assert!(!d.contains("webrtc=warn") && !d.contains("rtc_ice=error"), "{d}");
        assert!(d.contains("rtc_dtls=error"), "{d}");
    }

    fn site() -> Identifier {
        let cs =
            tracing::callsite!(name: "test", kind: tracing::metadata::Kind::EVENT, level: Level::ERROR, fields: []);
        tracing::callsite::Callsite::metadata(cs).callsite()
    }

    #[test]
    fn repeats_are_cut_and_summarised() {
        let t0 = Instant::now();
        let mut l = RepeatLimiter::default();
        let id = site();
        let shown = (0..3428)
            .filter(|i| l.allow(t0 + Duration::from_millis(*i), id.clone(), || "webrtc (driver.rs:1654)".to_owned()))
            .count();
        assert_eq!(shown, REPEATS_SHOWN as usize);
        assert_eq!(l.take_suppressed(t0 + Duration::from_secs(1)), [], "the window is not over yet");
        let over = l.take_suppressed(t0 + REPEAT_WINDOW);
        assert_eq!(over, [("webrtc (driver.rs:1654)".to_owned(), 3428 - u64::from(REPEATS_SHOWN))]);
        // A new window shows lines again.
        assert!(l.allow(t0 + REPEAT_WINDOW + Duration::from_millis(1), id.clone(), || "x".to_owned()));
        // A quiet callsite is forgotten once its window is over.
        assert_eq!(l.take_suppressed(t0 + REPEAT_WINDOW * 3), []);
        assert!(l.windows.is_empty());
    }

    /// Through a real subscriber: twenty identical errors write five lines.
    #[test]
    fn the_filter_cuts_a_flood_in_a_real_subscriber() {
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let writer = buf.clone();
        let repeats = Repeats::default();
        let layer = tracing_subscriber::fmt::layer().with_ansi(false).with_writer(move || writer.clone());
        let sub = tracing_subscriber::registry().with(tracing_subscriber::Layer::with_filter(layer, repeats.clone()));
        tracing::subscriber::with_default(sub, || {
            for _ in 0..20 {
                tracing::error!("Network is unreachable");
            }
            tracing::info!("an info line always passes");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.matches("Network is unreachable").count(), REPEATS_SHOWN as usize, "{text}");
        assert!(text.contains("an info line always passes"), "{text}");
    }
}
