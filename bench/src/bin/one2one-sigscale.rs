//! one2one-sigscale: signaling scale of one2one-server, without media.
//!
//! 1. opens `--conns` plain WebSockets to `/one2one` (`--concurrency` at a
//!    time) and keeps them open;
//! 2. registers each under a distinct name (`--concurrency` registers in
//!    flight) and waits for every `registerResponse` accepted;
//! 3. reads the server's VmRSS before step 1, after step 1 and after step 2,
//!    giving the server's memory per registered idle socket;
//! 4. takes `--pairs` pairs of those registered users and, for `--duration`
//!    seconds, has each pair loop `call` → `incomingCall` →
//!    `incomingCallResponse` reject → `callResponse` rejected. Rejecting
//!    exercises the whole ringing state machine without creating media legs
//!    (an accept would make the embedded relay build two WebRTC legs).
//!
//! Every other socket stays registered and idle throughout. The server's and
//! the generator's CPU time come from /proc.

use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail, ensure};
use clap::Parser as _;
use futures_util::{SinkExt as _, StreamExt as _, stream};
use one2one_bench::procstat;
use one2one_bench::stats::quantile;
use serde::Serialize;
use shared_proto::{ClientMsg, Response, ServerMsg, decode_server, encode};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Each reply must come within this.
const REPLY_DEADLINE: Duration = Duration::from_secs(20);

/// A syntactically plausible offer: a reject never hands it to the media
/// backend, the server only checks that it is not empty.
const FAKE_OFFER: &str = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";

/// Signaling scale of one2one-server: idle sockets, register rate, call-signaling rate.
#[derive(Debug, Clone, clap::Parser)]
#[command(version, about)]
struct Args {
    /// Signaling URL, plain WebSocket: ws://HOST:PORT/one2one.
    #[arg(long)]
    url: String,
    /// The server process, for its RSS and CPU time.
    #[arg(long)]
    server_pid: u32,
    /// WebSockets to open and register.
    #[arg(long, default_value_t = 10_000)]
    conns: usize,
    /// Connects (and then registers) in flight at once.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// Caller/callee pairs that loop call → reject (0 skips this phase).
    #[arg(long, default_value_t = 1000)]
    pairs: usize,
    /// Round trips per second one pair may start at most. Each socket sends
    /// one message per round trip and the server drops messages above 50 per
    /// second per socket (`--rate-limit`, burst 200), so keep this under 50;
    /// the most the run can reach is then pairs × this.
    #[arg(long, default_value_t = 40.0)]
    pair_rate: f64,
    /// Seconds of call signaling measured.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Seconds to wait after the last register before reading RSS.
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    /// Read buffer of each generator socket, in bytes. tungstenite's default
    /// is 128 KiB and it fills the whole buffer with zeros on the first read,
    /// so every socket holds that much resident memory.
    #[arg(long, default_value_t = 4096)]
    client_read_buffer: usize,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Default, Serialize)]
struct Phase {
    count: usize,
    seconds: f64,
    per_second: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    max_ms: Option<f64>,
    server_cpu_s: f64,
    generator_cpu_s: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    conns: usize,
    concurrency: usize,
    rss_before_kib: u64,
    rss_connected_kib: u64,
    rss_registered_kib: u64,
    /// (registered - before) / conns.
    rss_per_registered_socket_kib: f64,
    /// (connected - before) / conns: the socket alone, before its name.
    rss_per_open_socket_kib: f64,
    connect: Phase,
    register: Phase,
    pairs: usize,
    /// Most round trips per second one pair starts.
    pair_rate: f64,
    /// call → incomingCall → reject → callResponse round trips.
    call_reject: Phase,
    rss_after_calls_kib: u64,
    client_read_buffer: usize,
    /// The generator's own RSS growth per registered socket.
    generator_rss_per_socket_kib: f64,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("one2one-sigscale: tokio runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let json = args.json;
    match rt.block_on(run(args)) {
        Ok(r) => {
            if json {
                match serde_json::to_string(&r) {
                    Ok(j) => println!("{j}"),
                    Err(e) => eprintln!("one2one-sigscale: report: {e}"),
                }
            } else {
                print!("{}", text(&r));
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("one2one-sigscale: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The soft limit on open files of this process.
fn nofile_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

async fn connect(url: &str, read_buffer: usize) -> anyhow::Result<Ws> {
    ensure!(url.starts_with("ws://"), "only ws:// URLs (start the server with --http)");
    let config = WebSocketConfig::default().read_buffer_size(read_buffer);
    let (ws, _) =
        tokio::time::timeout(REPLY_DEADLINE, tokio_tungstenite::connect_async_with_config(url, Some(config), true))
            .await
            .map_err(|_| anyhow!("no connection within {REPLY_DEADLINE:?}"))?
            .with_context(|| format!("connecting to {url}"))?;
    Ok(ws)
}

async fn send(ws: &mut Ws, msg: &ClientMsg) -> anyhow::Result<()> {
    ws.send(Message::Text(encode(msg).into())).await.context("send")
}

async fn recv(ws: &mut Ws) -> anyhow::Result<ServerMsg> {
    let next = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => return decode_server(t.as_str()).map_err(|e| anyhow!("{e}: {t}")),
                Some(Ok(Message::Close(c))) => bail!("the server closed the socket ({c:?})"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e).context("receive"),
                None => bail!("the socket closed"),
            }
        }
    };
    tokio::time::timeout(REPLY_DEADLINE, next).await.map_err(|_| anyhow!("no reply within {REPLY_DEADLINE:?}"))?
}

struct Cpu {
    server: u32,
    ticks: f64,
    at: (f64, f64, Instant),
}

impl Cpu {
    fn start(server: u32, ticks: f64) -> anyhow::Result<Cpu> {
        let at =
            (procstat::cpu_seconds(server, ticks)?, procstat::cpu_seconds(std::process::id(), ticks)?, Instant::now());
        Ok(Cpu { server, ticks, at })
    }

    fn phase(self, count: usize, mut lat_us: Vec<u32>) -> anyhow::Result<Phase> {
        let seconds = self.at.2.elapsed().as_secs_f64();
        let server = procstat::cpu_seconds(self.server, self.ticks)? - self.at.0;
        let generator = procstat::cpu_seconds(std::process::id(), self.ticks)? - self.at.1;
        lat_us.sort_unstable();
        let ms = |v: Option<u32>| v.map(|u| f64::from(u) / 1000.0);
        Ok(Phase {
            count,
            seconds,
            per_second: count as f64 / seconds,
            p50_ms: ms(quantile(&lat_us, 0.5)),
            p99_ms: ms(quantile(&lat_us, 0.99)),
            max_ms: ms(lat_us.last().copied()),
            server_cpu_s: server,
            generator_cpu_s: generator,
        })
    }
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u128::from(u32::MAX)) as u32
}

async fn run(args: Args) -> anyhow::Result<Report> {
    ensure!(args.conns > 0 && args.concurrency > 0, "--conns and --concurrency must be at least 1");
    ensure!(args.pairs * 2 <= args.conns, "--pairs needs 2 × pairs <= --conns");
    ensure!(args.duration > 0.0 && args.duration.is_finite(), "--duration must be positive");
    ensure!(args.pair_rate > 0.0 && args.pair_rate.is_finite(), "--pair-rate must be positive");
    if let Some(limit) = nofile_limit() {
        ensure!(
            limit >= args.conns as u64 + 64,
            "{} sockets need a larger open-file limit than {limit}: run under `ulimit -n {}`",
            args.conns,
            args.conns + 1024
        );
    }
    let ticks = procstat::clock_ticks();
    let pid = args.server_pid;
    let run_id = format!(
        "s{:x}",
        (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros()).unwrap_or(0) as u64
            ^ u64::from(std::process::id()))
            & 0xff_ffff
    );
    let rss_before = procstat::rss_kib(pid)?;
    let me = std::process::id();
    let my_rss_before = procstat::rss_kib(me)?;
    let read_buffer = args.client_read_buffer.max(256);

    // 1. Connect.
    let cpu = Cpu::start(pid, ticks)?;
    let url = args.url.clone();
    let results: Vec<anyhow::Result<(Ws, u32)>> = stream::iter(0..args.conns)
        .map(|i| {
            let url = url.clone();
            async move {
                let t = Instant::now();
                let ws = connect(&url, read_buffer).await.with_context(|| format!("socket {i}"))?;
                Ok((ws, micros(t.elapsed())))
            }
        })
        .buffered(args.concurrency)
        .collect()
        .await;
    let (socks, lat) = split_results(results)?;
    let connect = cpu.phase(socks.len(), lat)?;
    settle(args.settle).await;
    let rss_connected = procstat::rss_kib(pid)?;

    // 2. Register each socket under its own name.
    let names: Vec<String> = (0..args.conns).map(|i| format!("{run_id}-{i}")).collect();
    let cpu = Cpu::start(pid, ticks)?;
    let results: Vec<anyhow::Result<(Ws, u32)>> = stream::iter(socks.into_iter().zip(names.iter().cloned()))
        .map(|(mut ws, name)| async move {
            let t = Instant::now();
            send(&mut ws, &ClientMsg::Register { name: name.clone() }).await?;
            match recv(&mut ws).await.with_context(|| format!("register {name}"))? {
                ServerMsg::RegisterResponse { response: Response::Accepted, .. } => Ok((ws, micros(t.elapsed()))),
                other => bail!("register {name}: {other:?}"),
            }
        })
        .buffered(args.concurrency)
        .collect()
        .await;
    let (mut socks, lat) = split_results(results)?;
    let register = cpu.phase(socks.len(), lat)?;
    settle(args.settle).await;
    let rss_registered = procstat::rss_kib(pid)?;
    let my_rss_registered = procstat::rss_kib(me)?;

    // 3. Call → reject loops on the first 2 × pairs sockets; the rest idle.
    let mut call_reject = Phase::default();
    if args.pairs > 0 {
        let idle = socks.split_off(args.pairs * 2);
        let mut it = socks.into_iter().zip(names.iter().cloned());
        let until = Instant::now() + Duration::from_secs_f64(args.duration);
        let cpu = Cpu::start(pid, ticks)?;
        let mut tasks = Vec::with_capacity(args.pairs);
        while let (Some((a, an)), Some((b, bn))) = (it.next(), it.next()) {
            tasks.push(tokio::spawn(pair_loop(a, an, b, bn, until, args.pair_rate)));
        }
        let mut lat = Vec::new();
        let mut errors = Vec::new();
        for t in tasks {
            match t.await {
                Ok(Ok(l)) => lat.extend(l),
                Ok(Err(e)) => errors.push(format!("{e:#}")),
                Err(e) => errors.push(format!("task: {e}")),
            }
        }
        call_reject = cpu.phase(lat.len(), lat)?;
        if let Some(first) = errors.first() {
            bail!("{} of {} pairs failed; first: {first}", errors.len(), args.pairs);
        }
        drop(idle);
    }
    let rss_after_calls = procstat::rss_kib(pid)?;
    let n = args.conns as f64;
    Ok(Report {
        conns: args.conns,
        concurrency: args.concurrency,
        rss_before_kib: rss_before,
        rss_connected_kib: rss_connected,
        rss_registered_kib: rss_registered,
        rss_per_registered_socket_kib: (rss_registered as f64 - rss_before as f64) / n,
        rss_per_open_socket_kib: (rss_connected as f64 - rss_before as f64) / n,
        connect,
        register,
        pairs: args.pairs,
        pair_rate: args.pair_rate,
        call_reject,
        rss_after_calls_kib: rss_after_calls,
        client_read_buffer: read_buffer,
        generator_rss_per_socket_kib: (my_rss_registered as f64 - my_rss_before as f64) / n,
    })
}

async fn settle(secs: f64) {
    tokio::time::sleep(Duration::from_secs_f64(secs.max(0.0))).await;
}

/// One pair's round trips until `until`, at most `rate` per second; the
/// latency of each, in µs.
async fn pair_loop(
    mut a: Ws,
    a_name: String,
    mut b: Ws,
    b_name: String,
    until: Instant,
    rate: f64,
) -> anyhow::Result<Vec<u32>> {
    let mut lat = Vec::new();
    let call = ClientMsg::Call { from: a_name.clone(), to: b_name.clone(), sdp_offer: FAKE_OFFER.to_owned() };
    let reject = ClientMsg::reject(a_name.clone(), "declined");
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while Instant::now() < until {
        tick.tick().await;
        let t = Instant::now();
        send(&mut a, &call).await?;
        match recv(&mut b).await {
            Ok(ServerMsg::IncomingCall { from }) if from == a_name => {}
            Ok(other) => bail!("{b_name} expected incomingCall from {a_name}, got {other:?}"),
            Err(e) => {
                // Say what the caller got instead (a rate-limit error, say).
                let caller = match tokio::time::timeout(Duration::from_millis(200), recv(&mut a)).await {
                    Ok(Ok(m)) => format!("{m:?}"),
                    _ => "nothing".to_owned(),
                };
                return Err(e).with_context(|| format!("{b_name} waiting for incomingCall; the caller got {caller}"));
            }
        }
        send(&mut b, &reject).await?;
        match recv(&mut a).await.with_context(|| format!("{a_name} waiting for callResponse"))? {
            ServerMsg::CallResponse { response: Response::Rejected, .. } => {}
            other => bail!("{a_name} expected callResponse rejected, got {other:?}"),
        }
        lat.push(micros(t.elapsed()));
    }
    Ok(lat)
}

fn opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into())
}

fn phase_line(name: &str, p: &Phase) -> String {
    format!(
        "{name}: {} in {:.2} s = {:.0}/s; latency p50 {} ms, p99 {} ms, max {} ms; server CPU {:.2} s ({:.0} %), generator CPU {:.2} s\n",
        p.count,
        p.seconds,
        p.per_second,
        opt(p.p50_ms),
        opt(p.p99_ms),
        opt(p.max_ms),
        p.server_cpu_s,
        100.0 * p.server_cpu_s / p.seconds.max(1e-9),
        p.generator_cpu_s
    )
}

fn text(r: &Report) -> String {
    let mut s = format!(
        "{} sockets, {} in flight; server RSS {} KiB before, {} KiB connected, {} KiB registered, {} KiB after calls\n",
        r.conns, r.concurrency, r.rss_before_kib, r.rss_connected_kib, r.rss_registered_kib, r.rss_after_calls_kib
    );
    s += &format!(
        "RSS per registered idle socket {:.2} KiB (per open socket before register {:.2} KiB)\n",
        r.rss_per_registered_socket_kib, r.rss_per_open_socket_kib
    );
    s += &format!(
        "generator RSS per socket {:.2} KiB (read buffer {} bytes)\n",
        r.generator_rss_per_socket_kib, r.client_read_buffer
    );
    s += &phase_line("connect (TCP + WebSocket upgrade)", &r.connect);
    s += &phase_line("register round trips", &r.register);
    if r.pairs > 0 {
        s += &phase_line(
            &format!(
                "call→reject round trips ({} pairs, each at most {}/s: cap {:.0}/s)",
                r.pairs,
                r.pair_rate,
                r.pairs as f64 * r.pair_rate
            ),
            &r.call_reject,
        );
    }
    s
}

/// Sockets and their latencies from a phase's results; the first error wins.
fn split_results(results: Vec<anyhow::Result<(Ws, u32)>>) -> anyhow::Result<(Vec<Ws>, Vec<u32>)> {
    let mut socks = Vec::with_capacity(results.len());
    let mut lat = Vec::with_capacity(results.len());
    for r in results {
        let (ws, us) = r?;
        socks.push(ws);
        lat.push(us);
    }
    Ok((socks, lat))
}
