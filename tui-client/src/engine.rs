//! The thin async driver around [`Model`]: the signaling socket, the peer
//! connection and the media pipelines. It decides nothing about calls; it
//! performs the model's outputs and reports [`Event`]s to a front end.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use one2one_media::peer::{Peer, PeerEvent, PeerOptions, PeerState};
use shared_proto::{decode_server, encode};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::audio_dev::Speaker;
use crate::media_io::{
    AudioReceiver, AudioSource, AudioSpec, Counters, Recorder, VideoSource, VideoSpec, run_audio_sender,
    start_video_receiver, start_video_sender,
};
use crate::model::{EndReason, Event, Input, Model, Output, Problem, exit};
use crate::net;
use crate::taps::Taps;

#[derive(Debug, Clone)]
pub struct Options {
    pub server: String,
    pub ca_cert: Option<PathBuf>,
    pub insecure: bool,
    pub ice_servers: Vec<String>,
    pub bind_ips: Vec<IpAddr>,
    pub name: String,
    /// `call` mode: whom to call; the session ends with the call.
    pub call: Option<String>,
    pub video: VideoSpec,
    pub video_size: (u32, u32),
    pub fps: u32,
    pub bitrate_kbps: u32,
    pub audio: AudioSpec,
    /// `None`: received audio is not played; `Some("default")` or a name.
    pub speaker: Option<String>,
    /// Echo cancellation when a microphone and a speaker are both live.
    pub aec: bool,
    pub record_remote: Option<PathBuf>,
    pub auto_answer: Option<bool>,
    pub hangup_after: Option<Duration>,
    /// How long connecting to the server (TCP, TLS, WebSocket) may take.
    pub connect_timeout: Duration,
    /// Shared with the front end: pictures, level, mute, camera.
    pub taps: Arc<Taps>,
}

/// What the engine tells its front end (headless JSON or the TUI).
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    Event(Event),
    Stats(Stats),
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Stats {
    pub video_fps: f64,
    pub frames_decoded: u64,
    pub width: u64,
    pub height: u64,
    pub bitrate_in_kbps: f64,
    pub bitrate_out_kbps: f64,
    pub audio_level: f64,
    pub audio_packets: u64,
    pub rtt_ms: Option<f64>,
    pub loss_pct: Option<f64>,
    pub jitter_ms: Option<f64>,
    pub glass_to_glass_ms: Option<f64>,
}

/// Commands from the front end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Call(String),
    Accept,
    Reject,
    Hangup,
    Mute(bool),
    Camera(bool),
    /// A front end could not make sense of a request: reported as an error.
    Refuse(Problem, String),
    Quit,
}

/// How a session ended: the exit code, and the line to leave on the
/// terminal (the reason, from this user's point of view).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub code: i32,
    pub farewell: Option<String>,
}

/// Resolves when the front end asks to quit (or is gone); other commands
/// that arrive while connecting are refused with a `not_now` error.
async fn quit_requested(commands: &mut mpsc::UnboundedReceiver<Command>, reports: &mpsc::UnboundedSender<Report>) {
    while let Some(c) = commands.recv().await {
        match c {
            Command::Quit => return,
            // Switches only flip the taps: they hold for the first call.
            Command::Mute(_) | Command::Camera(_) => {}
            Command::Refuse(problem, message) => {
                let _ = reports.send(Report::Event(Event::Error { problem, message }));
            }
            Command::Call(_) | Command::Accept | Command::Reject | Command::Hangup => {
                let what = match c {
                    Command::Call(_) => "call",
                    Command::Accept => "accept",
                    Command::Reject => "reject",
                    _ => "hangup",
                };
                let message = format!("{what}: not connected to the server yet");
                let _ = reports.send(Report::Event(Event::Error { problem: Problem::NotNow, message }));
            }
        }
    }
}

fn connect_reason(e: net::ConnectError) -> EndReason {
    match e {
        net::ConnectError::Tls(m) => EndReason::TlsRefused(m),
        net::ConnectError::Config(m) => EndReason::BadConfig(m),
        net::ConnectError::Unreachable(m) => EndReason::ServerUnreachable(m),
    }
}

/// One call's media.
struct Session {
    peer: Arc<Peer>,
    stop: Arc<AtomicBool>,
    keyframe: Arc<AtomicBool>,
    video_tx: Option<std::sync::mpsc::Sender<crate::media_io::EncodedFrame>>,
    audio_rx: Option<AudioReceiver>,
    recorder: Option<Arc<Mutex<Recorder>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The encoder and decoder threads; joined on close, so that no codec
    /// runs while the process exits.
    threads: Vec<std::thread::JoinHandle<()>>,
    started: bool,
}

impl Session {
    async fn close(mut self) {
        self.stop.store(true, Relaxed);
        for t in self.tasks.drain(..) {
            t.abort();
        }
        self.video_tx = None;
        let threads = std::mem::take(&mut self.threads);
        let joined = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        });
        if tokio::time::timeout(Duration::from_secs(2), joined).await.is_err() {
            tracing::warn!("a media thread did not stop within 2 s");
        }
        self.peer.close().await;
        if let Some(r) = &self.recorder
            && let Ok(mut r) = r.lock()
        {
            r.finish();
        }
    }
}

pub struct Engine {
    opts: Options,
    model: Model,
    session: Option<Session>,
    counters: Arc<Counters>,
    reports: mpsc::UnboundedSender<Report>,
    peer_tx: mpsc::UnboundedSender<PeerEvent>,
    peer_rx: mpsc::UnboundedReceiver<PeerEvent>,
    call_started_at: Option<tokio::time::Instant>,
    exit: Option<i32>,
    /// The line a person reads when the session ends.
    farewell: Option<String>,
}

impl Engine {
    pub fn new(opts: Options, reports: mpsc::UnboundedSender<Report>) -> Engine {
        let (peer_tx, peer_rx) = mpsc::unbounded_channel();
        Engine {
            opts,
            model: Model::new(),
            session: None,
            counters: Arc::new(Counters::default()),
            reports,
            peer_tx,
            peer_rx,
            call_started_at: None,
            exit: None,
            farewell: None,
        }
    }

    /// Checks sources and the speaker before going online, so that a
    /// missing device fails fast with its own message. A named speaker that
    /// cannot be found or opened is as fatal as a missing microphone; the
    /// default one only warns (a box without sound still takes calls, as it
    /// does when the speaker fails mid-call).
    pub fn check_devices(&self) -> Result<(), crate::media_io::DeviceError> {
        VideoSource::open(&self.opts.video, self.opts.video_size, self.opts.fps)?;
        AudioSource::open(&self.opts.audio, None)?;
        if let Some(name) = &self.opts.speaker
            && let Err(e) = Speaker::open(Some(name), None)
        {
            if name == "default" {
                eprintln!(
                    "one2one: warning: {e}; calls go on without sound (pick one from `one2one devices`, or --speaker none)"
                );
            } else {
                return Err(crate::media_io::DeviceError {
                    message: format!(
                        "--speaker {name}: {e}; see `one2one devices` for the speakers there are, or use --speaker none for calls without sound"
                    ),
                    code: exit::NO_DEVICE,
                });
            }
        }
        Ok(())
    }

    /// Connects, registers and runs until the session ends. Commands (a
    /// quit above all) are honoured at every moment, connecting included.
    pub async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) -> Outcome {
        let connect = net::connect(&self.opts.server, self.opts.ca_cert.as_deref(), self.opts.insecure);
        let limit = self.opts.connect_timeout;
        let connected = tokio::select! {
            r = tokio::time::timeout(limit, connect) => r,
            () = quit_requested(&mut commands, &self.reports) => return Outcome { code: exit::OK, farewell: None },
        };
        let mut ws = match connected {
            Ok(Ok(ws)) => ws,
            Ok(Err(e)) => return self.fail(connect_reason(e)),
            Err(_) => {
                return self.fail(EndReason::ServerUnreachable(format!(
                    "no answer within {} s (--connect-timeout)",
                    limit.as_secs_f64()
                )));
            }
        };
        self.step(&mut ws, Input::Connected).await;
        let name = self.opts.name.clone();
        self.step(&mut ws, Input::Register(name)).await;
        // A server that takes the socket but never answers `register` is
        // as unreachable as one that never answers at all.
        let register_by = tokio::time::Instant::now() + limit;
        let mut stats_tick = tokio::time::interval(Duration::from_secs(1));
        let mut last_stats = (Instant::now(), 0u64, 0u64, 0u64);
        while self.exit.is_none() {
            let hangup_at = self.call_started_at.zip(self.opts.hangup_after).map(|(t, d)| t + d);
            let registering = (self.model.phase == crate::model::Phase::Registering).then_some(register_by);
            tokio::select! {
                frame = ws.next() => match frame {
                    Some(Ok(Message::Text(t))) => match decode_server(t.as_str()) {
                        Ok(msg) => self.step(&mut ws, Input::Server(msg)).await,
                        Err(e) => tracing::warn!(error = %e, "unreadable message from the server"),
                    },
                    Some(Ok(Message::Close(c))) => {
                        let why = c.map(|c| c.reason.to_string()).filter(|r| !r.is_empty()).unwrap_or_else(|| "the server closed the connection".into());
                        self.step(&mut ws, Input::Disconnected(why)).await;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => self.step(&mut ws, Input::Disconnected(net::describe_lost(&e))).await,
                    None => self.step(&mut ws, Input::Disconnected("the server closed the connection".into())).await,
                },
                ev = self.peer_rx.recv() => {
                    if let Some(ev) = ev {
                        self.on_peer_event(&mut ws, ev).await;
                    }
                }
                cmd = commands.recv() => match cmd {
                    Some(Command::Call(to)) => self.step(&mut ws, Input::Call(to)).await,
                    Some(Command::Accept) => self.step(&mut ws, Input::Accept).await,
                    Some(Command::Reject) => self.step(&mut ws, Input::Reject).await,
                    Some(Command::Hangup) => self.step(&mut ws, Input::Hangup).await,
                    Some(Command::Mute(on)) => self.opts.taps.muted.store(on, Relaxed),
                    Some(Command::Camera(on)) => {
                        let was_off = self.opts.taps.camera_off.swap(!on, Relaxed);
                        if on && was_off && let Some(s) = &self.session {
                            s.keyframe.store(true, Relaxed);
                        }
                    }
                    Some(Command::Refuse(problem, message)) => self.report(Event::Error { problem, message }),
                    Some(Command::Quit) | None => {
                        self.step(&mut ws, Input::Leave).await;
                        self.exit = Some(exit::OK);
                    }
                },
                () = sleep_until_opt(registering) => {
                    let why = format!("no answer to `register` within {} s (--connect-timeout)", limit.as_secs_f64());
                    let reason = EndReason::ServerUnreachable(why);
                    self.report(Event::Fatal(reason.clone()));
                    self.exit = Some(reason.exit_code());
                    self.farewell = Some(reason.describe(""));
                }
                () = sleep_until_opt(hangup_at) => {
                    self.call_started_at = None;
                    self.step(&mut ws, Input::Hangup).await;
                }
                _ = stats_tick.tick() => {
                    let taps = &self.opts.taps;
                    for (lost, problem, what) in [
                        (&taps.camera_lost, Problem::CameraLost, "camera lost: the call goes on without video"),
                        (&taps.mic_lost, Problem::MicrophoneLost, "microphone lost: the call goes on without your audio"),
                        (&taps.speaker_lost, Problem::SpeakerLost, "speaker lost: the call goes on without sound"),
                    ] {
                        if lost.swap(false, Relaxed) {
                            self.report(Event::Error { problem, message: what.into() });
                        }
                    }
                    if self.session.as_ref().is_some_and(|s| s.started) {
                        let s = self.stats(&mut last_stats).await;
                        let _ = self.reports.send(Report::Stats(s));
                    }
                }
            }
        }
        if let Some(s) = self.session.take() {
            s.close().await;
        }
        let _ = ws.close(None).await;
        Outcome { code: self.exit.unwrap_or(exit::OK), farewell: self.farewell.take() }
    }

    /// The session ends before it began.
    fn fail(self, reason: EndReason) -> Outcome {
        self.report(Event::Fatal(reason.clone()));
        Outcome { code: reason.exit_code(), farewell: Some(reason.describe("")) }
    }

    fn report(&self, e: Event) {
        let _ = self.reports.send(Report::Event(e));
    }

    /// Feeds the model and performs what it asks, including inputs that the
    /// outputs produce in turn.
    async fn step(&mut self, ws: &mut net::Ws, input: Input) {
        let mut queue = std::collections::VecDeque::from([input]);
        while let Some(input) = queue.pop_front() {
            for out in self.model.handle(input) {
                match out {
                    Output::Send(msg) => {
                        if let Err(e) = ws.send(Message::Text(encode(&msg).into())).await {
                            queue.push_back(Input::Disconnected(e.to_string()));
                        }
                    }
                    Output::CreatePeer => match self.create_peer().await {
                        Ok(offer) => queue.push_back(Input::OfferReady(offer)),
                        Err(e) => queue.push_back(Input::MediaFailed(e)),
                    },
                    Output::ApplyAnswer(sdp) => {
                        if let Err(e) = self.apply_answer(&sdp).await {
                            queue.push_back(Input::MediaFailed(e));
                        }
                    }
                    Output::RemoteCandidate(c) => {
                        if let Some(s) = &self.session {
                            s.peer.add_remote_candidate(c).await;
                        }
                    }
                    Output::ClosePeer => {
                        if let Some(s) = self.session.take() {
                            s.close().await;
                        }
                        self.opts.taps.clear();
                        self.call_started_at = None;
                    }
                    Output::Event(e) => {
                        if let Some(input) = self.on_event(&e) {
                            queue.push_back(input);
                        }
                        self.report(e);
                    }
                }
            }
        }
    }

    /// Session policy: auto-answer, calling once registered, leaving when
    /// the call of `call` mode ends or the session cannot go on.
    fn on_event(&mut self, e: &Event) -> Option<Input> {
        match e {
            Event::Registered { .. } => self.opts.call.clone().map(Input::Call),
            Event::IncomingCall { .. } => match self.opts.auto_answer {
                Some(true) => Some(Input::Accept),
                Some(false) => Some(Input::Reject),
                None => None,
            },
            Event::CallStarted { .. } => {
                self.call_started_at = Some(tokio::time::Instant::now());
                None
            }
            Event::CallEnded { peer, reason } => {
                if self.opts.call.is_some() {
                    self.exit = Some(reason.exit_code());
                    self.farewell = Some(reason.describe(peer));
                }
                None
            }
            Event::Fatal(reason) => {
                if self.exit.is_none() {
                    self.exit = Some(reason.exit_code());
                    self.farewell = Some(reason.describe(""));
                }
                None
            }
            Event::Calling { .. } | Event::Ringing { .. } | Event::MissedCall { .. } | Event::Error { .. } => None,
        }
    }

    async fn create_peer(&mut self) -> Result<String, String> {
        if let Some(old) = self.session.take() {
            old.close().await;
        }
        let opts = PeerOptions {
            bind_ips: self.opts.bind_ips.clone(),
            ice_servers: self.opts.ice_servers.iter().map(|u| (u.clone(), String::new(), String::new())).collect(),
        };
        let peer = Arc::new(Peer::new(&opts, self.peer_tx.clone()).await.map_err(|e| e.to_string())?);
        let offer = peer.create_offer().await.map_err(|e| e.to_string())?;
        let recorder = match self.opts.record_remote.as_deref().map(Recorder::create) {
            Some(Ok(r)) => Some(Arc::new(Mutex::new(r))),
            Some(Err(e)) => {
                self.report(Event::Error { problem: Problem::Device, message: e });
                None
            }
            None => None,
        };
        self.counters = Arc::new(Counters::default());
        self.session = Some(Session {
            peer,
            stop: Arc::new(AtomicBool::new(false)),
            keyframe: Arc::new(AtomicBool::new(true)),
            video_tx: None,
            audio_rx: AudioReceiver::new(recorder.clone(), self.counters.clone(), self.opts.taps.clone()),
            recorder,
            tasks: vec![],
            threads: vec![],
            started: false,
        });
        Ok(offer)
    }

    async fn apply_answer(&mut self, sdp: &str) -> Result<(), String> {
        let Some(s) = self.session.as_mut() else {
            return Err("no peer".into());
        };
        s.peer.apply_answer(sdp).await.map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Media starts when the peer connects.
    fn start_media(&mut self) -> Result<(), String> {
        let counters = self.counters.clone();
        let Some(s) = self.session.as_mut() else {
            return Ok(());
        };
        if s.started {
            return Ok(());
        }
        s.started = true;
        if let Some(src) =
            VideoSource::open(&self.opts.video, self.opts.video_size, self.opts.fps).map_err(|e| e.message)?
        {
            let sender = start_video_sender(
                src,
                (self.opts.fps, self.opts.bitrate_kbps),
                s.peer.clone(),
                s.keyframe.clone(),
                s.stop.clone(),
                counters.clone(),
                self.opts.taps.clone(),
            )
            .map_err(|e| e.message)?;
            s.threads.push(sender);
        }
        // Devices that fail now (they were there at start-up) leave the
        // call running without them; the user is told.
        let mut problems = vec![];
        let aec = match (&self.opts.audio, &self.opts.speaker) {
            (AudioSpec::Mic(_), Some(_)) if self.opts.aec => crate::audio_dev::new_aec(),
            _ => None,
        };
        if let Some(name) = &self.opts.speaker
            && let Some(rx) = s.audio_rx.as_mut()
        {
            match Speaker::open(Some(name), aec.clone()) {
                Ok(sp) => {
                    tracing::info!(speaker = sp.description, "speaker opened");
                    rx.set_speaker(sp);
                }
                Err(e) => problems.push(format!("{e}: the call goes on without sound")),
            }
        }
        match AudioSource::open(&self.opts.audio, aec) {
            Ok(Some(src)) => s.tasks.push(tokio::spawn(run_audio_sender(
                src,
                s.peer.clone(),
                counters.clone(),
                self.opts.taps.clone(),
            ))),
            Ok(None) => {}
            Err(e) => problems.push(format!("{e}: the call goes on without your audio")),
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let need_key = Arc::new(AtomicBool::new(false));
        s.threads.push(start_video_receiver(
            rx,
            s.recorder.clone(),
            counters,
            need_key.clone(),
            self.opts.taps.clone(),
        ));
        s.video_tx = Some(tx);
        for message in problems {
            let _ = self.reports.send(Report::Event(Event::Error { problem: Problem::Device, message }));
        }
        let peer = s.peer.clone();
        s.tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                if need_key.swap(false, Relaxed) {
                    peer.request_keyframe().await;
                }
            }
        }));
        Ok(())
    }

    async fn on_peer_event(&mut self, ws: &mut net::Ws, ev: PeerEvent) {
        match ev {
            PeerEvent::Candidate(c) => self.step(ws, Input::LocalCandidate(c)).await,
            PeerEvent::State(PeerState::Connected) => {
                if let Err(e) = self.start_media() {
                    self.step(ws, Input::MediaFailed(e)).await;
                } else {
                    self.step(ws, Input::MediaConnected).await;
                }
            }
            PeerEvent::State(PeerState::Failed) => self.step(ws, Input::MediaFailed("ICE failed".into())).await,
            PeerEvent::State(_) => {}
            PeerEvent::Video { data, rtp_timestamp, .. } => {
                if let Some(tx) = self.session.as_ref().and_then(|s| s.video_tx.as_ref()) {
                    let _ = tx.send(crate::media_io::EncodedFrame { data, rtp_timestamp });
                }
            }
            PeerEvent::Audio { data, seq, .. } => {
                if let Some(rx) = self.session.as_mut().and_then(|s| s.audio_rx.as_mut()) {
                    rx.push(seq, data);
                }
            }
            PeerEvent::KeyframeRequested => {
                if let Some(s) = &self.session {
                    s.keyframe.store(true, Relaxed);
                }
            }
        }
    }

    async fn stats(&self, last: &mut (Instant, u64, u64, u64)) -> Stats {
        let c = &self.counters;
        let now = Instant::now();
        let dt = now.duration_since(last.0).as_secs_f64().max(0.001);
        let frames = c.frames_decoded.load(Relaxed);
        let bin = c.bytes_in.load(Relaxed);
        let bout = c.bytes_out.load(Relaxed);
        let mut s = Stats {
            video_fps: (frames.saturating_sub(last.1)) as f64 / dt,
            frames_decoded: frames,
            width: c.width.load(Relaxed),
            height: c.height.load(Relaxed),
            bitrate_in_kbps: (bin.saturating_sub(last.2)) as f64 * 8.0 / dt / 1000.0,
            bitrate_out_kbps: (bout.saturating_sub(last.3)) as f64 * 8.0 / dt / 1000.0,
            audio_level: c.audio_level.swap(0, Relaxed) as f64 / 10_000.0,
            audio_packets: c.audio_packets.load(Relaxed),
            ..Default::default()
        };
        *last = (now, frames, bin, bout);
        let lat = c.latency_us_last.load(Relaxed);
        if lat > 0 {
            s.glass_to_glass_ms = Some(lat as f64 / 1000.0);
        }
        if let Some(sess) = &self.session {
            let report =
                sess.peer.connection().get_stats(Instant::now(), webrtc::peer_connection::StatsSelector::None).await;
            if let Some(rtt) = report.candidate_pairs().map(|p| p.current_round_trip_time).find(|r| *r > 0.0) {
                s.rtt_ms = Some(rtt * 1000.0);
            }
            let (mut lost, mut got, mut jitter) = (0i64, 0u64, 0f64);
            for i in report.inbound_rtp_streams() {
                let r = &i.received_rtp_stream_stats;
                lost += r.packets_lost;
                got += r.packets_received;
                // webrtc 0.21 reports jitter in RTP timestamp units.
                let clock = if r.rtp_stream_stats.kind == rtc::rtp_transceiver::rtp_sender::RtpCodecKind::Video {
                    90_000.0
                } else {
                    48_000.0
                };
                jitter = jitter.max(r.jitter / clock);
            }
            if got > 0 {
                s.loss_pct = Some(100.0 * lost.max(0) as f64 / (got as f64 + lost.max(0) as f64));
                s.jitter_ms = Some(jitter * 1000.0);
            }
        }
        s
    }
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
