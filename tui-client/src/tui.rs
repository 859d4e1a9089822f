//! The terminal: owns it (raw mode, alternate screen, restored on exit, on
//! panic and on SIGTERM), reads keys on a thread, and redraws from the app
//! model at most 20 times a second. Drawing never waits on media: frames
//! are taken from the taps as they are at that moment.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event as TermEvent, KeyCode, KeyEventKind, KeyModifiers};
use tokio::sync::mpsc;

use crate::app::{App, Cmd, Key, Msg};
use crate::engine::{Command, Report};
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
) {
    taps.want_frames.store(true, Relaxed);
    let mut terminal = ratatui::init();
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
    let mut term_signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut seen_generation = u64::MAX;
    let mut dirty = true;
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
            () = async { match term_signal.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {
                let _ = commands.send(Command::Quit);
                break 'ui;
            }
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
        let generation = taps.generation.load(Relaxed);
        // Redraw on changes, and once a second for the call timer.
        if dirty
            || generation != seen_generation
            || app.now.elapsed() < Duration::from_millis(60) && app.elapsed().is_some()
        {
            seen_generation = generation;
            dirty = false;
            let frames = Frames { remote: taps.remote(), local: taps.local(), mic_level: taps.mic_level() };
            if terminal.draw(|f| ui::render(&app, &frames, f)).is_err() {
                break;
            }
        }
    }
    ratatui::restore();
}
