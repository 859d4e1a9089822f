//! `one2one`: a softphone for one-to-one video calls through one2one-server.
//!
//! Exit codes: 0 the call or session ended normally; 2 bad command line
//! (or calling yourself); 3 server unreachable or gone; 4 TLS refused;
//! 5 registration refused (name taken or not valid); 6 unknown user; 7 busy;
//! 8 declined; 9 no answer; 10 media failure; 11 no camera, microphone or
//! speaker (or another source that cannot be opened).

mod app;
mod audio_dev;
mod camera;
mod engine;
mod events;
mod graphics;
mod media_io;
mod model;
mod net;
mod taps;
mod tui;
mod ui;
mod video;

use std::io::IsTerminal as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use tokio::sync::mpsc;

use crate::engine::{Command, Engine, Options, Outcome};
use crate::events::HeadlessEvent;
use crate::media_io::{AudioSpec, VideoSpec};
use crate::model::{Problem, exit};

#[derive(Parser, Debug)]
#[command(name = "one2one", version, propagate_version = true, about = "One-to-one video calls from the terminal")]
struct Cli {
    /// Signaling WebSocket of the server.
    #[arg(long, global = true, env = "ONE2ONE_SERVER", default_value = "wss://localhost:8443/one2one")]
    server: String,
    /// Trust this PEM certificate (e.g. a self-signed server's).
    #[arg(long, global = true, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// Do not verify the server's certificate (prints a warning).
    #[arg(long, global = true)]
    insecure: bool,
    /// Give up connecting to the server after this many seconds (0.1 to 600).
    #[arg(long, global = true, value_name = "SECS", default_value = "5", value_parser = parse_connect_timeout, allow_negative_numbers = true)]
    connect_timeout: Duration,
    /// STUN/TURN URL for ICE (repeatable).
    #[arg(long = "ice-server", global = true, value_name = "URL")]
    ice_servers: Vec<String>,
    /// Local addresses to gather media candidates on (default: all non-loopback).
    #[arg(long = "media-ip", global = true, value_name = "IP")]
    media_ips: Vec<IpAddr>,
    /// camera[:N] | test | FILE.y4m | none
    #[arg(long, global = true, default_value = "test")]
    video: VideoSpec,
    /// Size of the video sent, WxH (even, 128x96 to 3840x2160).
    #[arg(long, global = true, value_name = "WxH", default_value = "640x480", value_parser = parse_size)]
    video_size: (u32, u32),
    /// Frames per second sent (1 to 60).
    #[arg(long, global = true, default_value_t = 30, value_parser = parse_fps, allow_negative_numbers = true)]
    fps: u32,
    /// Video bitrate in kbit/s (50 to 20000).
    #[arg(long, global = true, value_name = "KBPS", default_value_t = 1000, value_parser = parse_bitrate, allow_negative_numbers = true)]
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
    /// Record what the other side sends to PATH.y4m (30 fps) and PATH.wav.
    #[arg(long, global = true, value_name = "PATH")]
    record_remote: Option<PathBuf>,
    /// No user interface: events as JSON lines on stdout, commands on stdin.
    #[arg(long, global = true)]
    headless: bool,
    /// Answer incoming calls automatically.
    #[arg(long, global = true, value_enum)]
    auto_answer: Option<AutoAnswer>,
    /// Hang up this many seconds after a call starts (more than 0).
    #[arg(long, global = true, value_name = "SECS", value_parser = parse_hangup_after, allow_negative_numbers = true)]
    hangup_after: Option<Duration>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Register NAME and stay online, answering calls.
    Register {
        /// The name others call you by (1 to 64 characters).
        name: String,
    },
    /// Call PEER (registering as --as, default $USER); exits when the call ends.
    Call {
        /// The name of the person to call.
        peer: String,
        /// Register as this name for the call (default: $USER).
        #[arg(long = "as", value_name = "NAME")]
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

/// An integer in `range`, or the range in words.
fn int_in(s: &str, range: std::ops::RangeInclusive<u32>, unit: &str) -> Result<u32, String> {
    let why = || format!("must be a whole number of {unit} from {} to {}", range.start(), range.end());
    let v: i64 = s.trim().parse().map_err(|_| why())?;
    u32::try_from(v).ok().filter(|v| range.contains(v)).ok_or_else(why)
}

fn parse_fps(s: &str) -> Result<u32, String> {
    int_in(s, 1..=60, "frames per second")
}

fn parse_bitrate(s: &str) -> Result<u32, String> {
    int_in(s, 50..=20_000, "kbit/s")
}

/// Seconds in `(min, max]` (or `[min, max]` with `inclusive`).
fn seconds_in(s: &str, min: f64, max: f64, inclusive: bool) -> Result<Duration, String> {
    let why = || {
        let low = if inclusive { "from" } else { "more than" };
        format!("must be seconds, {low} {min} up to {max}")
    };
    let v: f64 = s.trim().parse().map_err(|_| why())?;
    let ok = v.is_finite() && v <= max && if inclusive { v >= min } else { v > min };
    if ok { Ok(Duration::from_secs_f64(v)) } else { Err(why()) }
}

fn parse_hangup_after(s: &str) -> Result<Duration, String> {
    seconds_in(s, 0.0, 86_400.0, false)
}

fn parse_connect_timeout(s: &str) -> Result<Duration, String> {
    seconds_in(s, 0.1, 600.0, true)
}

/// Refuses the command line: message on stderr, exit 2.
fn usage(message: &str) -> i32 {
    eprintln!("one2one: {message}");
    exit::USAGE
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "error".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
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
        Cmd::Register { name } => (name.trim().to_owned(), None),
        Cmd::Call { peer, as_name } => {
            let me = as_name.clone().or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "me".into());
            let peer = peer.trim().to_owned();
            if peer.is_empty() {
                return usage("call: the name to call is empty");
            }
            if peer == me.trim() {
                return usage(&format!("call: you cannot call yourself (you are {peer}; use --as NAME)"));
            }
            (me.trim().to_owned(), Some(peer))
        }
    };
    if name.is_empty() {
        return usage("your name is empty (register NAME, or call PEER --as NAME)");
    }
    // The TUI needs a terminal on both ends; say so before touching it.
    let terminal = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    if !cli.headless && !terminal {
        return usage("not a terminal: use --headless (events as JSON lines on stdout, commands on stdin)");
    }
    if let Some(path) = &cli.record_remote
        && let Err(e) = media_io::Recorder::create(path)
    {
        return usage(&e);
    }
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
        fps: cli.fps,
        bitrate_kbps: cli.bitrate,
        audio: cli.audio.clone(),
        speaker: Some(cli.speaker.clone()).filter(|s| s != "none"),
        aec: !cli.no_aec,
        record_remote: cli.record_remote.clone(),
        auto_answer: cli.auto_answer.map(|a| matches!(a, AutoAnswer::Accept)),
        hangup_after: cli.hangup_after,
        connect_timeout: cli.connect_timeout,
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
    quit_on_signals(cmd_tx.clone());
    if !cli.headless {
        let mut app = app::App::new(&me, &server, std::time::Instant::now());
        app.quit_after_call = matches!(cli.command, Cmd::Call { .. });
        // The UI runs on a thread of its own: drawing (a graphics protocol
        // encoding a picture above all) never holds up the call.
        let render = cli.video_render;
        let ui = std::thread::Builder::new().name("tui".into()).spawn(move || {
            match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt.block_on(tui::run(app, cmd_tx, report_rx, taps, render)),
                Err(e) => eprintln!("one2one: cannot start the user interface: {e}"),
            }
        });
        let Outcome { code, farewell } = engine.run(cmd_rx).await;
        // The screen is restored when the UI thread ends; only then can the
        // reason be printed where the person will still see it.
        if let Ok(ui) = ui {
            let _ = tokio::task::spawn_blocking(move || ui.join()).await;
        }
        if let Some(line) = farewell {
            eprintln!("one2one: {line}");
        }
        return code;
    }
    let printer = tokio::spawn(async move {
        use std::io::Write as _;
        while let Some(r) = report_rx.recv().await {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", HeadlessEvent::from_report(&r).to_line());
            let _ = out.flush();
        }
    });
    // Headless sessions are steered through stdin, one command per line.
    tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let Some(cmd) = headless_command(&line) else { continue };
            if cmd_tx.send(cmd).is_err() {
                break;
            }
        }
    });
    let Outcome { code, .. } = engine.run(cmd_rx).await;
    let _ = printer.await;
    code
}

/// One line of a headless session's stdin; `None` for a blank line.
fn headless_command(line: &str) -> Option<Command> {
    let line = line.trim();
    let (word, arg) = line.split_once(' ').map(|(w, a)| (w, a.trim())).unwrap_or((line, ""));
    Some(match (word, arg) {
        ("", _) => return None,
        ("call", who) => Command::Call(who.to_owned()),
        ("accept" | "a", "") => Command::Accept,
        ("reject" | "r", "") => Command::Reject,
        ("hangup" | "h", "") => Command::Hangup,
        ("mute", "") => Command::Mute(true),
        ("unmute", "") => Command::Mute(false),
        ("camera", "off") => Command::Camera(false),
        ("camera", "on") => Command::Camera(true),
        ("quit" | "q", "") => Command::Quit,
        _ => Command::Refuse(
            Problem::UnknownCommand,
            format!(
                "unknown command {line:?} (call NAME, accept, reject, hangup, mute, unmute, camera off, camera on, quit)"
            ),
        ),
    })
}

/// SIGINT, SIGTERM and SIGHUP end the session as `q` does, at any moment.
fn quit_on_signals(commands: mpsc::UnboundedSender<Command>) {
    use tokio::signal::unix::{SignalKind, signal};
    for kind in [SignalKind::interrupt(), SignalKind::terminate(), SignalKind::hangup()] {
        let Ok(mut sig) = signal(kind) else { continue };
        let commands = commands.clone();
        tokio::spawn(async move {
            while sig.recv().await.is_some() {
                if commands.send(Command::Quit).is_err() {
                    break;
                }
            }
        });
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
    let (host, ins, outs) = match audio_dev::list() {
        Ok(l) => l,
        Err(e) => {
            println!(
                "microphones and speakers: none ({e}); use --audio tone[:HZ] or --audio FILE.wav, and --speaker none"
            );
            println!("test sources: --video test, --video FILE.y4m, --audio tone[:HZ], --audio FILE.wav");
            return exit::OK;
        }
    };
    let section = |what: &str, usage: &str, list: &[audio_dev::Listed], instead: &str| {
        if list.iter().any(|l| l.default) {
            println!("{what} ({host}): ({usage}, * = default)");
        } else {
            println!("{what} ({host}): ({usage})");
            if list.is_empty() {
                println!(
                    "  none: no sound card or sound server offers one (PulseAudio or PipeWire not running?); {instead}"
                );
            } else {
                println!("  no default (ALSA's `default` cannot be opened): name one of these, or {instead}");
            }
        }
        for l in list {
            println!("  {l}");
        }
    };
    section("microphones", "--audio mic[:NAME]", &ins, "use --audio tone[:HZ] or --audio FILE.wav");
    section("speakers", "--speaker NAME", &outs, "use --speaker none");
    println!("test sources: --video test, --video FILE.y4m, --audio tone[:HZ], --audio FILE.wav");
    exit::OK
}
