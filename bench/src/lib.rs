//! one2one-bench: N concurrent one-to-one calls through a relay
//! (one2one-server or Janus's VideoCall plugin), each a caller and a callee
//! WebRTC peer sending pre-encoded VGA VP8 (about 1 Mbit/s, 30 fps) and
//! Opus (50 packets/s). It measures per-packet send-to-receive latency and
//! loss, call setup time (callee's accept to the first media packet at both
//! ends), and the server's CPU time and RSS from /proc.

pub mod janus;
pub mod media;
pub mod one2one;
pub mod peer;
pub mod procstat;
pub mod sig;
pub mod stats;

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;
use tokio::sync::watch;

use crate::media::Media;
use crate::peer::{Inbound, first_arrival};
use crate::stats::{Stream, Window, quantile};

/// How long a call may take to set up before it counts as failed.
pub const SETUP_DEADLINE: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// one2one-server over /one2one.
    One2one,
    /// Janus 1.x with janus.plugin.videocall over its WebSocket API.
    Janus,
}

/// Load generator for one-to-one call relays.
#[derive(Debug, Clone, clap::Parser)]
#[command(version, about)]
pub struct Args {
    #[arg(long, value_enum, default_value_t = Target::One2one)]
    pub target: Target,
    /// Signaling URL: ws://HOST:PORT/one2one (one2one-server --http), or ws://HOST:8188/ for Janus.
    #[arg(long)]
    pub url: String,
    /// Concurrent calls.
    #[arg(long, default_value_t = 10)]
    pub calls: usize,
    /// Seconds measured.
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,
    /// Seconds of media after every call is up, before measuring.
    #[arg(long, default_value_t = 5.0)]
    pub warmup: f64,
    /// Address the peers gather candidates on.
    #[arg(long, env = "ONE2ONE_TEST_IP")]
    pub media_ip: IpAddr,
    /// The server process, for its CPU time and RSS.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Video frames to pre-encode and loop.
    #[arg(long, default_value_t = 300)]
    pub frames: usize,
    /// Milliseconds between the starts of two calls.
    #[arg(long, default_value_t = 50)]
    pub stagger_ms: u64,
    /// Largest loss, in percent, for a call to pass the media check.
    #[arg(long, default_value_t = 1.0)]
    pub max_loss: f64,
}

/// What every call task shares.
pub struct Ctx {
    pub url: String,
    pub ip: IpAddr,
    pub media: Arc<Media>,
    pub window: Arc<Window>,
    pub stop: watch::Receiver<bool>,
    pub run_id: String,
}

/// One call's media, both ways, and when the callee accepted.
#[derive(Debug, Default)]
pub struct CallState {
    /// Caller → callee (recorded by the callee).
    pub a2b: Arc<Inbound>,
    /// Callee → caller (recorded by the caller).
    pub b2a: Arc<Inbound>,
    pub accepted: Mutex<Option<Instant>>,
}

impl CallState {
    fn streams(&self) -> [(&'static str, &Arc<Stream>); 4] {
        [
            ("caller->callee video", &self.a2b.video),
            ("caller->callee audio", &self.a2b.audio),
            ("callee->caller video", &self.b2a.video),
            ("callee->caller audio", &self.b2a.audio),
        ]
    }

    fn media_flows(&self) -> bool {
        self.streams().iter().all(|(_, s)| s.recv().first.is_some())
    }

    /// Accept to the first packet at both ends.
    fn setup(&self) -> Option<Duration> {
        let accepted = (*self.accepted.lock().unwrap_or_else(PoisonError::into_inner))?;
        let a = first_arrival(&self.b2a)?;
        let b = first_arrival(&self.a2b)?;
        Some(a.max(b).saturating_duration_since(accepted))
    }
}

#[derive(Debug, Serialize)]
pub struct StreamReport {
    pub name: &'static str,
    pub sent: u64,
    pub received: u64,
    pub loss_pct: f64,
}

#[derive(Debug, Serialize)]
pub struct CallReport {
    pub index: usize,
    pub error: Option<String>,
    pub setup_ms: Option<f64>,
    pub streams: Vec<StreamReport>,
    pub ok: bool,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub target: Target,
    pub calls: usize,
    pub calls_ok: usize,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub video_kbps: f64,
    pub server_cpu_s: Option<f64>,
    pub cpu_s_per_call_minute: Option<f64>,
    pub rss_idle_kib: Option<u64>,
    pub rss_kib: Option<u64>,
    pub rss_per_call_kib: Option<f64>,
    pub generator_cpu_pct: f64,
    pub packets_sent: u64,
    pub packets_received: u64,
    pub loss_pct: f64,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub latency_max_ms: Option<f64>,
    pub setup_p50_ms: Option<f64>,
    pub setup_p99_ms: Option<f64>,
    pub per_call: Vec<CallReport>,
    /// Every call carried video and audio both ways with loss under the limit.
    pub media_ok: bool,
}

fn ms(us: Option<u32>) -> Option<f64> {
    us.map(|u| f64::from(u) / 1000.0)
}

pub async fn run(args: Args) -> anyhow::Result<Report> {
    anyhow::ensure!(args.calls > 0, "--calls must be at least 1");
    anyhow::ensure!(args.duration > 0.0 && args.duration.is_finite(), "--duration must be positive");
    anyhow::ensure!(args.warmup >= 0.0 && args.warmup.is_finite(), "--warmup must not be negative");
    let ticks = procstat::clock_ticks();
    media::epoch();
    let t = Instant::now();
    let media = tokio::task::spawn_blocking({
        let frames = args.frames.max(1);
        move || Media::encode(frames)
    })
    .await
    .context("encoder thread")??;
    tracing::info!(
        frames = media.video.len(),
        kbps = media.video_kbps as u64,
        secs = t.elapsed().as_secs_f32(),
        "media encoded"
    );
    let rss_idle = args.server_pid.map(procstat::rss_kib).transpose()?;

    let window = Arc::new(Window::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let wall =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    let run_id = format!("b{:x}", (wall ^ u64::from(std::process::id())) & 0xff_ffff_ffff);
    let ctx = Arc::new(Ctx {
        url: args.url.clone(),
        ip: args.media_ip,
        media: Arc::new(media),
        window: window.clone(),
        stop: stop_rx,
        run_id,
    });
    let calls: Vec<Arc<CallState>> = (0..args.calls).map(|_| Arc::new(CallState::default())).collect();
    let mut tasks = Vec::new();
    for (i, call) in calls.iter().enumerate() {
        let (ctx, call) = (ctx.clone(), call.clone());
        let target = args.target;
        tasks.push(tokio::spawn(async move {
            match target {
                Target::One2one => one2one::run_call(ctx, i, call).await,
                Target::Janus => janus::run_call(ctx, i, call).await,
            }
        }));
        tokio::time::sleep(Duration::from_millis(args.stagger_ms)).await;
    }

    // Wait until every call carries media both ways (or has failed).
    let ready_by = Instant::now() + SETUP_DEADLINE;
    while Instant::now() < ready_by {
        let pending = calls.iter().zip(&tasks).filter(|(c, t)| !c.media_flows() && !t.is_finished()).count();
        if pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::info!(up = calls.iter().filter(|c| c.media_flows()).count(), of = args.calls, "calls up; warming up");
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;

    let me = std::process::id();
    let cpu0 = args.server_pid.map(|p| procstat::cpu_seconds(p, ticks)).transpose()?;
    let gen0 = procstat::cpu_seconds(me, ticks)?;
    let t0 = Instant::now();
    window.open(media::now_ns());
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    window.close(media::now_ns());
    let cpu1 = args.server_pid.map(|p| procstat::cpu_seconds(p, ticks)).transpose()?;
    let gen1 = procstat::cpu_seconds(me, ticks)?;
    let measured = t0.elapsed().as_secs_f64();
    let rss = args.server_pid.map(procstat::rss_kib).transpose()?;
    // Packets sent just before the window closed are still on their way.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = stop_tx.send(true);

    let mut errors = Vec::new();
    for t in tasks {
        let e = match tokio::time::timeout(Duration::from_secs(10), t).await {
            Ok(Ok(Ok(()))) => None,
            Ok(Ok(Err(e))) => Some(format!("{e:#}")),
            Ok(Err(e)) => Some(format!("task failed: {e}")),
            Err(_) => Some("did not end within 10 s of the stop".into()),
        };
        errors.push(e);
    }

    let mut latencies = Vec::new();
    let mut setups = Vec::new();
    let (mut sent_all, mut recv_all) = (0u64, 0u64);
    let mut per_call = Vec::new();
    for (i, (call, error)) in calls.iter().zip(errors).enumerate() {
        let mut streams = Vec::new();
        let mut ok = error.is_none();
        let (mut cs, mut cr) = (0u64, 0u64);
        for (name, s) in call.streams() {
            let sent = s.sent.packets.load(std::sync::atomic::Ordering::Relaxed);
            let r = s.recv();
            let received = r.in_window.min(sent);
            latencies.extend_from_slice(&r.latency_us);
            let loss_pct = if sent == 0 { 100.0 } else { 100.0 * (sent - received) as f64 / sent as f64 };
            ok &= sent > 0 && received > 0;
            cs += sent;
            cr += received;
            streams.push(StreamReport { name, sent, received, loss_pct });
        }
        let call_loss = if cs == 0 { 100.0 } else { 100.0 * (cs - cr) as f64 / cs as f64 };
        ok &= call_loss <= args.max_loss;
        sent_all += cs;
        recv_all += cr;
        let setup = call.setup();
        if let Some(s) = setup {
            setups.push(s.as_micros().min(u128::from(u32::MAX)) as u32);
        }
        per_call.push(CallReport { index: i, error, setup_ms: setup.map(|d| d.as_secs_f64() * 1000.0), streams, ok });
    }
    latencies.sort_unstable();
    setups.sort_unstable();
    let n = args.calls as f64;
    let server_cpu = cpu0.zip(cpu1).map(|(a, b)| b - a);
    let calls_ok = per_call.iter().filter(|c| c.ok).count();
    Ok(Report {
        target: args.target,
        calls: args.calls,
        calls_ok,
        duration_s: measured,
        warmup_s: args.warmup,
        video_kbps: ctx.media.video_kbps,
        server_cpu_s: server_cpu,
        cpu_s_per_call_minute: server_cpu.map(|c| c / (n * measured / 60.0)),
        rss_idle_kib: rss_idle,
        rss_kib: rss,
        rss_per_call_kib: rss_idle.zip(rss).map(|(a, b)| (b as f64 - a as f64) / n),
        generator_cpu_pct: 100.0 * (gen1 - gen0) / measured,
        packets_sent: sent_all,
        packets_received: recv_all,
        loss_pct: if sent_all == 0 { 100.0 } else { 100.0 * (sent_all - recv_all) as f64 / sent_all as f64 },
        latency_p50_ms: ms(quantile(&latencies, 0.5)),
        latency_p99_ms: ms(quantile(&latencies, 0.99)),
        latency_max_ms: ms(latencies.last().copied()),
        setup_p50_ms: ms(quantile(&setups, 0.5)),
        setup_p99_ms: ms(quantile(&setups, 0.99)),
        media_ok: calls_ok == args.calls,
        per_call,
    })
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}")).unwrap_or_else(|| "-".into())
}

impl Report {
    /// A human-readable summary.
    pub fn text(&self) -> String {
        let mut s = String::new();
        s += &format!(
            "target {:?}: {} calls ({} with media both ways, loss <= limit), {:.1} s measured after {:.1} s warm-up, video {:.0} kbit/s\n",
            self.target, self.calls, self.calls_ok, self.duration_s, self.warmup_s, self.video_kbps
        );
        s += &format!(
            "server CPU {} s = {} CPU-s per call-minute; RSS {} KiB (idle {} KiB) = {} KiB per call\n",
            opt(self.server_cpu_s, 2),
            opt(self.cpu_s_per_call_minute, 3),
            self.rss_kib.map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
            self.rss_idle_kib.map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
            opt(self.rss_per_call_kib, 0)
        );
        s += &format!(
            "packets {} sent, {} received, loss {:.3} %; latency p50 {} ms, p99 {} ms, max {} ms; setup p50 {} ms, p99 {} ms; generator CPU {:.0} %\n",
            self.packets_sent,
            self.packets_received,
            self.loss_pct,
            opt(self.latency_p50_ms, 3),
            opt(self.latency_p99_ms, 3),
            opt(self.latency_max_ms, 1),
            opt(self.setup_p50_ms, 1),
            opt(self.setup_p99_ms, 1),
            self.generator_cpu_pct
        );
        for c in self.per_call.iter().filter(|c| !c.ok) {
            s += &format!("call {} FAILED: {}\n", c.index, c.error.as_deref().unwrap_or("media check"));
            for st in &c.streams {
                s += &format!("  {}: sent {} received {} loss {:.2} %\n", st.name, st.sent, st.received, st.loss_pct);
            }
        }
        s
    }
}

/// Resolves once the run asks every call to stop.
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
