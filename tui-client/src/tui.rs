//! The terminal: owns it (raw mode, alternate screen, restored on exit, on
//! panic and when the engine ends, e.g. on SIGTERM), reads keys on a
//! thread, and redraws from the app model at most 20 times a second. It
//! runs on a thread of its own, so drawing never holds up the call, and it
//! never waits on media: frames are taken from the taps as they are at
//! that moment.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event as TermEvent, KeyCode, KeyEventKind, KeyModifiers};
use tokio::sync::mpsc;

use crate::app::{App, Cmd, Key, Msg};
use crate::engine::{Command, Report};
use crate::graphics::{Graphics, RenderChoice};
use crate::taps::Taps;
use crate::ui::{self, Frames};

enum Input {
    Key(Key),
    Redraw,
    Quit,
}

/// Runs the UI until the user quits or the session ends; returns when the
/// terminal has been restored.
pub async fn run(
    mut app: App,
    commands: mpsc::UnboundedSender<Command>,
    mut reports: mpsc::UnboundedReceiver<Report>,
    taps: Arc<Taps>,
    render: RenderChoice,
) {
    taps.want_frames.store(true, Relaxed);
    // Libraries (ALSA above all) write to stderr; on the TUI's screen that
    // would be garbage, so it goes to a log file while the TUI runs.
    let stderr_log = StderrToFile::start();
    // Asks the terminal about graphics before the TUI takes it over.
    // (This thread is the UI's own, so asking may block it.)
    let (mut gfx, note) = Graphics::detect(render);
    let mut terminal = ratatui::init();
    if let Some(g) = &gfx {
        tracing::info!(protocol = g.protocol_name(), "video through terminal graphics");
    }
    if let Some(note) = note {
        tracing::warn!("{note}");
        app.say(note);
    }
    let (key_tx, mut keys) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        loop {
            let input = match event::read() {
                Ok(TermEvent::Key(k)) if k.kind == KeyEventKind::Press => {
                    if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
                        Input::Quit
                    } else {
                        match k.code {
                            KeyCode::Char(c) => Input::Key(Key::Char(c)),
                            KeyCode::Enter => Input::Key(Key::Enter),
                            KeyCode::Esc => Input::Key(Key::Esc),
                            KeyCode::Backspace => Input::Key(Key::Backspace),
                            _ => continue,
                        }
                    }
                }
                Ok(TermEvent::Resize(..)) => Input::Redraw,
                Ok(_) => continue,
                Err(_) => Input::Quit,
            };
            if key_tx.send(input).is_err() {
                break;
            }
        }
    });
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut seen_generation = u64::MAX;
    let mut dirty = true;
    let mut last_status = String::new();
    'ui: loop {
        let msg = tokio::select! {
            k = keys.recv() => match k {
                Some(Input::Key(k)) => Some(Msg::Key(k)),
                Some(Input::Redraw) => { dirty = true; None }
                Some(Input::Quit) | None => { let _ = commands.send(Command::Quit); break 'ui; }
            },
            r = reports.recv() => match r {
                Some(r) => Some(Msg::Report(r)),
                None => break 'ui, // the engine is done
            },
            _ = tick.tick() => Some(Msg::Tick(Instant::now())),
        };
        if let Some(msg) = msg {
            let is_tick = matches!(msg, Msg::Tick(_));
            for cmd in app.update(msg) {
                match cmd {
                    Cmd::Engine(c) => {
                        let _ = commands.send(c);
                    }
                    Cmd::Mute(on) => {
                        let _ = commands.send(Command::Mute(on));
                    }
                    Cmd::Camera(on) => {
                        let _ = commands.send(Command::Camera(on));
                    }
                    Cmd::Bell => {
                        let _ = std::io::stdout().write_all(b"\x07");
                        let _ = std::io::stdout().flush();
                    }
                    Cmd::Quit => {
                        let _ = commands.send(Command::Quit);
                        break 'ui;
                    }
                }
            }
            if !is_tick {
                dirty = true;
            }
        }
        // A passing message that expires changes the screen too.
        let status = app.status();
        if status != last_status {
            last_status = status;
            dirty = true;
        }
        let generation = taps.generation.load(Relaxed);
        // Redraw on changes, and once a second for the call timer.
        if dirty
            || generation != seen_generation
            || app.now.elapsed() < Duration::from_millis(60) && app.elapsed().is_some()
        {
            seen_generation = generation;
            dirty = false;
            let frames = Frames { remote: taps.remote(), local: taps.local(), mic_level: taps.mic_level(), generation };
            let drawn = terminal.draw(|f| ui::render(&app, &frames, gfx.as_mut(), f));
            if drawn.is_err() {
                break;
            }
        }
    }
    ratatui::restore();
    drop(stderr_log);
}

/// Sends stderr to `$XDG_STATE_HOME/one2one/tui.log` (or
/// `~/.local/state/...`, or the temp dir) until dropped.
struct StderrToFile {
    saved: Option<std::os::fd::OwnedFd>,
    path: std::path::PathBuf,
}

impl StderrToFile {
    fn start() -> StderrToFile {
        use std::io::IsTerminal as _;
        use std::os::fd::AsFd as _;
        let dir = std::env::var_os("XDG_STATE_HOME")
            .map(std::path::PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".local/state")))
            .unwrap_or_else(std::env::temp_dir)
            .join("one2one");
        let path = dir.join("tui.log");
        let mut me = StderrToFile { saved: None, path };
        if !std::io::stderr().is_terminal() {
            return me; // already going somewhere else
        }
        let file = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::OpenOptions::new().create(true).write(true).truncate(true).open(&me.path));
        let Ok(file) = file else { return me };
        if let Ok(saved) = std::io::stderr().as_fd().try_clone_to_owned()
            && rustix::stdio::dup2_stderr(&file).is_ok()
        {
            me.saved = Some(saved);
        }
        me
    }
}

impl Drop for StderrToFile {
    fn drop(&mut self) {
        if let Some(saved) = self.saved.take() {
            let _ = rustix::stdio::dup2_stderr(&saved);
            if std::fs::metadata(&self.path).is_ok_and(|m| m.len() > 0) {
                eprintln!("one2one: messages of this session are in {}", self.path.display());
            }
        }
    }
}
