//! `one2one`: a softphone for one-to-one video calls through one2one-server.
//!
//! Exit codes: 0 the call or session ended normally; 2 bad command line;
//! 3 server unreachable; 4 TLS refused; 5 name taken (registration refused);
//! 6 unknown user; 7 busy; 8 declined; 9 no answer; 10 media failure;
//! 11 no camera or microphone (or another source that cannot be opened).

mod app;
mod audio_dev;
mod camera;
mod engine;
mod graphics;
mod media_io;
mod model;
mod net;
mod taps;
mod tui;
mod ui;
mod video;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;
use tokio::sync::mpsc;

use crate::engine::{Command, Engine, Options, Report};
use crate::media_io::{AudioSpec, VideoSpec};
use crate::model::{Event, exit};

#[derive(Parser, Debug)]
#[command(name = "one2one", version, about = "One-to-one video calls from the terminal")]
struct Cli {
    /// Signaling WebSocket of the server.
    #[arg(long, global = true, env = "ONE2ONE_SERVER", default_value = "wss://localhost:8443/one2one")]
    server: String,
    /// Trust this PEM certificate (e.g. a self-signed server's).
    #[arg(long, global = true)]
    ca_cert: Option<PathBuf>,
    /// Do not verify the server's certificate (prints a warning).
    #[arg(long, global = true)]
    insecure: bool,
    /// STUN/TURN URL for ICE (repeatable).
    #[arg(long = "ice-server", global = true)]
    ice_servers: Vec<String>,
    /// Local addresses to gather media candidates on (default: all non-loopback).
    #[arg(long = "media-ip", global = true)]
    media_ips: Vec<IpAddr>,
    /// camera[:N] | test | FILE.y4m | none
    #[arg(long, global = true, default_value = "test")]
    video: VideoSpec,
    /// Size of the video sent, WxH.
    #[arg(long, global = true, default_value = "640x480", value_parser = parse_size)]
    video_size: (u32, u32),
    /// Frames per second sent.
    #[arg(long, global = true, default_value_t = 30)]
    fps: u32,
    /// Video bitrate in kbit/s.
    #[arg(long, global = true, default_value_t = 1000)]
    bitrate: u32,
    /// mic[:NAME] | tone[:HZ] | FILE.wav | none
    #[arg(long, global = true, default_value = "tone:440")]
    audio: AudioSpec,
    /// Where received audio plays: default | NAME (see `one2one devices`) | none
    #[arg(long, global = true, default_value = "default")]
    speaker: String,
    /// How the TUI draws video: auto (ask the terminal) | halfblocks | kitty | sixel | iterm2
    #[arg(long, global = true, default_value = "auto")]
    video_render: graphics::RenderChoice,
    /// No echo cancellation (it runs when a microphone and a speaker are both live).
    #[arg(long, global = true)]
    no_aec: bool,
    /// Record what the other side sends to PATH.y4m and PATH.wav.
    #[arg(long, global = true)]
    record_remote: Option<PathBuf>,
    /// No user interface: events as JSON lines on stdout.
    #[arg(long, global = true)]
    headless: bool,
    /// Answer incoming calls automatically.
    #[arg(long, global = true, value_enum)]
    auto_answer: Option<AutoAnswer>,
    /// Hang up this many seconds after a call starts.
    #[arg(long, global = true)]
    hangup_after: Option<f64>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Register NAME and stay online, answering calls.
    Register { name: String },
    /// Call PEER (registering as --as, default $USER); exits when the call ends.
    Call {
        peer: String,
        #[arg(long = "as")]
        as_name: Option<String>,
    },
    /// List cameras and audio devices.
    Devices,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum AutoAnswer {
    Accept,
    Reject,
}

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s.split_once('x').ok_or("expected WxH, e.g. 640x480")?;
    let w: u32 = w.parse().map_err(|_| "bad width")?;
    let h: u32 = h.parse().map_err(|_| "bad height")?;
    if w < 128 || h < 96 || w > 3840 || h > 2160 || w % 2 == 1 || h % 2 == 1 {
        return Err("size must be even, from 128x96 to 3840x2160".into());
    }
    Ok((w, h))
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "error".into()))
        .with_writer(std::io::stderr)
        .init();
    let code = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => {
            let code = rt.block_on(run(cli));
            // The stdin reader may still block on a pipe that never closes;
            // don't wait for it.
            rt.shutdown_background();
            code
        }
        Err(e) => {
            eprintln!("one2one: cannot start: {e}");
            exit::MEDIA_FAILED
        }
    };
    std::process::exit(code);
}

async fn run(cli: Cli) -> i32 {
    let (name, call) = match &cli.command {
        Cmd::Devices => return devices(),
        Cmd::Register { name } => (name.clone(), None),
        Cmd::Call { peer, as_name } => {
            let me = as_name.clone().or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "me".into());
            (me, Some(peer.clone()))
        }
    };
    if cli.insecure {
        eprintln!("one2one: warning: --insecure: the server's certificate is not checked");
    }
    let opts = Options {
        server: cli.server.clone(),
        ca_cert: cli.ca_cert.clone(),
        insecure: cli.insecure,
        ice_servers: cli.ice_servers.clone(),
        bind_ips: cli.media_ips.clone(),
        name,
        call,
        video: cli.video.clone(),
        video_size: cli.video_size,
        fps: cli.fps.clamp(1, 60),
        bitrate_kbps: cli.bitrate.clamp(50, 20_000),
        audio: cli.audio.clone(),
        speaker: Some(cli.speaker.clone()).filter(|s| s != "none"),
        aec: !cli.no_aec,
        record_remote: cli.record_remote.clone(),
        auto_answer: cli.auto_answer.map(|a| matches!(a, AutoAnswer::Accept)),
        hangup_after: cli.hangup_after.filter(|s| *s > 0.0).map(Duration::from_secs_f64),
        taps: Default::default(),
    };
    let taps = opts.taps.clone();
    let (me, server) = (opts.name.clone(), opts.server.clone());
    let (report_tx, mut report_rx) = mpsc::unbounded_channel();
    let engine = Engine::new(opts, report_tx);
    if let Err(e) = engine.check_devices() {
        eprintln!("one2one: {e}");
        return e.code;
    }
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let quit = cmd_tx.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = quit.send(Command::Quit);
        }
    });
    let headless = cli.headless;
    if !headless {
        let mut app = app::App::new(&me, &server, std::time::Instant::now());
        app.quit_after_call = cli_is_call(&cli);
        // One task runs both: the engine's future holds codec state that is
        // not Sync, and the UI only talks to it through channels. Codecs and
        // device I/O run on their own threads, so drawing never holds up
        // media.
        let (code, ()) = tokio::join!(engine.run(cmd_rx), tui::run(app, cmd_tx, report_rx, taps, cli.video_render));
        return code;
    }
    let printer = tokio::spawn(async move {
        while let Some(r) = report_rx.recv().await {
            print_report(&r, headless);
        }
    });
    // Headless sessions can be steered through stdin: `call NAME`,
    // `accept`, `reject`, `hangup`, `quit`, one per line.
    tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let line = line.trim();
            let cmd = match line.split_once(' ') {
                Some(("call", who)) => Command::Call(who.trim().to_owned()),
                _ => match line {
                    "accept" | "a" => Command::Accept,
                    "reject" | "r" => Command::Reject,
                    "hangup" | "h" => Command::Hangup,
                    "quit" | "q" => Command::Quit,
                    "" => continue,
                    other => {
                        eprintln!("one2one: unknown command {other:?} (call NAME, accept, reject, hangup, quit)");
                        continue;
                    }
                },
            };
            if cmd_tx.send(cmd).is_err() {
                break;
            }
        }
    });
    let code = engine.run(cmd_rx).await;
    let _ = printer.await;
    code
}

fn cli_is_call(cli: &Cli) -> bool {
    matches!(cli.command, Cmd::Call { .. })
}

/// Headless: one JSON object per line on stdout. Otherwise: plain lines.
fn print_report(r: &Report, headless: bool) {
    let line = match r {
        Report::Stats(s) => json!({"event": "stats", "stats": s}),
        Report::Event(e) => match e {
            Event::Registered { name } => json!({"event": "registered", "name": name}),
            Event::IncomingCall { from } => json!({"event": "incoming_call", "from": from}),
            Event::CallStarted { peer } => json!({"event": "call_started", "peer": peer}),
            Event::CallEnded { peer, reason } => json!({
                "event": "call_ended", "peer": peer, "reason": reason.tag(),
                "message": reason.describe(), "exit_code": reason.exit_code()
            }),
            Event::Fatal(reason) => json!({
                "event": "error", "reason": reason.tag(), "message": reason.describe(), "exit_code": reason.exit_code()
            }),
            Event::Error(m) => json!({"event": "error", "message": m}),
        },
    };
    if headless {
        println!("{line}");
    } else {
        match r {
            Report::Event(Event::Error(m)) => eprintln!("one2one: {m}"),
            Report::Event(Event::Fatal(reason)) => eprintln!("one2one: {}", reason.describe()),
            Report::Event(Event::CallEnded { reason, .. }) => {
                eprintln!("one2one: {}", reason.describe())
            }
            _ => eprintln!("{line}"),
        }
    }
}

fn devices() -> i32 {
    let cams = camera::list();
    if cams.is_empty() {
        println!("cameras: none (use --video test)");
    } else {
        println!("cameras: (--video camera:N)");
        for c in cams {
            println!("  {}", c.replace('\n', "\n  "));
        }
    }
    let (host, ins, outs) = audio_dev::list();
    println!("microphones ({host}): (--audio mic[:NAME], * = default)");
    if ins.is_empty() {
        println!("  none (use --audio tone[:HZ] or --audio FILE.wav)");
    }
    for i in ins {
        println!("  {i}");
    }
    println!("speakers ({host}): (--speaker NAME, * = default)");
    if outs.is_empty() {
        println!("  none (use --speaker none)");
    }
    for o in outs {
        println!("  {o}");
    }
    println!("test sources: --video test, --video FILE.y4m, --audio tone[:HZ], --audio FILE.wav");
    exit::OK
}
