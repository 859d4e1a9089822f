//! The view: every screen drawn from [`App`] and the latest frames.

use std::time::Duration;

use ratatui::Frame;
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Clear, Paragraph, Wrap};

use crate::app::{App, Screen};
use crate::graphics::Graphics;
use crate::video::{self, RgbFrame};

/// What the media side has to show.
#[derive(Debug, Default, Clone)]
pub struct Frames {
    pub remote: Option<RgbFrame>,
    pub local: Option<RgbFrame>,
    /// Microphone level, 0 to 1.
    pub mic_level: f32,
    /// Bumped with every new picture.
    pub generation: u64,
}

/// Draws the whole screen; `gfx` is the terminal's graphics protocol for
/// the remote video, if it has one (half-blocks otherwise).
pub fn render(app: &App, frames: &Frames, gfx: Option<&mut Graphics>, f: &mut Frame<'_>) {
    let [top, main, bottom] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(1), Constraint::Length(1)]).areas(f.area());
    status_bar(app, top, f);
    match &app.screen {
        Screen::Connecting => centered(f, main, vec![Line::from("Connecting to the server…")]),
        Screen::Offline => centered(
            f,
            main,
            vec![Line::from("Offline").bold(), Line::from(app.status()), Line::from(""), Line::from("q to quit")],
        ),
        Screen::Idle => {
            let mut lines = vec![
                Line::from(format!("You are {}.", app.me)).bold(),
                Line::from(""),
                Line::from(vec![
                    key("c"),
                    Span::raw(" call someone   "),
                    key("?"),
                    Span::raw(" help   "),
                    key("q"),
                    Span::raw(" quit"),
                ]),
            ];
            if !app.missed.is_empty() {
                lines.push(Line::from(""));
                let names: Vec<&str> = app.missed.iter().rev().map(String::as_str).collect();
                lines.push(Line::from(format!("Missed calls: {}", names.join(", "))).fg(Color::Yellow));
            }
            centered(f, main, lines)
        }
        Screen::Dialing { input } => centered(
            f,
            main,
            vec![
                Line::from(vec![Span::raw("Call: ").bold(), Span::raw(format!("{input}▏"))]),
                hint("Enter to call, Esc to cancel"),
            ],
        ),
        Screen::RingingOut { peer, .. } => centered(
            f,
            main,
            vec![Line::from(format!("Calling {peer}… {}", clock(app.elapsed()))).bold(), hint("Esc to cancel")],
        ),
        Screen::RingingIn { from, .. } => prompt(f, main, from),
        Screen::InCall { peer, .. } => in_call(app, frames, gfx, peer, main, f),
    }
    let line = Paragraph::new(Line::from(vec![Span::raw(" "), Span::raw(app.status())]))
        .style(Style::default().fg(Color::Black).bg(Color::Gray));
    f.render_widget(line, bottom);
    if app.show_help {
        help(f, main);
    }
    if app.confirm_quit {
        confirm_quit(f, main);
    }
}

fn confirm_quit(f: &mut Frame<'_>, area: Rect) {
    let text =
        Line::from(vec![Span::raw("Hang up and quit? "), key("y"), Span::raw(" yes  "), key("n"), Span::raw(" no")]);
    let r = popup(area, text.width() as u16 + 4, 3);
    f.render_widget(Clear, r);
    let block = Block::bordered().border_type(BorderType::Rounded).border_style(Style::default().fg(Color::Yellow));
    f.render_widget(Paragraph::new(text).alignment(Alignment::Center).block(block), r);
}

fn key(k: &str) -> Span<'static> {
    Span::styled(format!("[{k}]"), Style::default().fg(Color::Yellow).add_modifier(Modifier::BOLD))
}

fn hint(s: &str) -> Line<'static> {
    Line::from(Span::styled(s.to_owned(), Style::default().fg(Color::DarkGray)))
}

fn clock(d: Option<Duration>) -> String {
    let s = d.unwrap_or_default().as_secs();
    format!("{:02}:{:02}", s / 60, s % 60)
}

fn status_bar(app: &App, area: Rect, f: &mut Frame<'_>) {
    let (state, colour) = if app.online() { ("online", Color::Green) } else { ("offline", Color::Red) };
    let line = Line::from(vec![
        Span::styled(" one2one ", Style::default().fg(Color::Black).bg(Color::Cyan).bold()),
        Span::raw(" "),
        Span::raw(app.me.clone()).bold(),
        Span::raw("  "),
        Span::styled(format!("● {state}"), Style::default().fg(colour)),
        Span::raw("  "),
        Span::styled(app.server.clone(), Style::default().fg(Color::DarkGray)),
    ]);
    f.render_widget(Paragraph::new(line), area);
}

fn centered(f: &mut Frame<'_>, area: Rect, lines: Vec<Line<'static>>) {
    let h = lines.len() as u16;
    let [_, mid, _] = Layout::vertical([Constraint::Fill(1), Constraint::Length(h), Constraint::Fill(1)]).areas(area);
    f.render_widget(Paragraph::new(lines).alignment(Alignment::Center).wrap(Wrap { trim: true }), mid);
}

fn popup(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect::new(area.x + (area.width - w) / 2, area.y + (area.height - h) / 2, w, h)
}

fn prompt(f: &mut Frame<'_>, area: Rect, from: &str) {
    let one_line = format!("{from} is calling: [a]ccept / [r]eject");
    let width = one_line.chars().count() as u16 + 6;
    // A long name gets lines of its own (cut to the box), so the keys
    // always show.
    let lines: Vec<Line<'static>> = if width <= area.width {
        vec![Line::from(""), Line::from(one_line).bold()]
    } else {
        let room = usize::from(area.width.saturating_sub(4)).max(1);
        let name: String = if from.chars().count() > room {
            from.chars().take(room.saturating_sub(1)).chain(['…']).collect()
        } else {
            from.to_owned()
        };
        vec![Line::from(name).bold(), Line::from("is calling"), Line::from("[a]ccept / [r]eject").bold()]
    };
    let w = if width <= area.width { width } else { area.width };
    let r = popup(area, w, lines.len() as u16 + 3);
    f.render_widget(Clear, r);
    let block = Block::bordered()
        .border_type(BorderType::Rounded)
        .title(" Incoming call ")
        .border_style(Style::default().fg(Color::Yellow));
    let body = Paragraph::new(lines).alignment(Alignment::Center).block(block);
    f.render_widget(body, r);
}

fn help(f: &mut Frame<'_>, area: Rect) {
    let rows = [
        ("c", "call someone"),
        ("a / r", "accept / reject a call"),
        ("h / Esc", "hang up, close a panel"),
        ("m", "mute or unmute"),
        ("v", "camera off or on"),
        ("s", "call statistics"),
        ("?", "this help"),
        ("q", "quit"),
    ];
    let lines: Vec<Line<'static>> = rows
        .iter()
        .map(|(k, d)| {
            Line::from(vec![Span::styled(format!("{k:>7}  "), Style::default().fg(Color::Yellow)), Span::raw(*d)])
        })
        .collect();
    let r = popup(area, 36, lines.len() as u16 + 2);
    f.render_widget(Clear, r);
    f.render_widget(Paragraph::new(lines).block(Block::bordered().title(" Keys ")), r);
}

fn in_call(app: &App, frames: &Frames, gfx: Option<&mut Graphics>, peer: &str, area: Rect, f: &mut Frame<'_>) {
    let [video_area, info] = Layout::vertical([Constraint::Min(1), Constraint::Length(1)]).areas(area);
    match (&frames.remote, gfx) {
        (Some(frame), Some(g)) => g.draw(frame, frames.generation, video_area, f.buffer_mut()),
        (Some(frame), None) => video::draw(frame, video_area, f.buffer_mut()),
        (None, _) => centered(f, video_area, vec![Line::from(format!("waiting for {peer}'s video…"))]),
    }
    // Self view in the bottom-right corner.
    let pip_w = (video_area.width / 4).max(8);
    let pip_h = (pip_w / 3).max(3);
    if video_area.width > pip_w + 2 && video_area.height > pip_h + 1 {
        let pip = Rect::new(video_area.right() - pip_w - 1, video_area.bottom() - pip_h, pip_w, pip_h);
        f.render_widget(Clear, pip);
        match (&frames.local, app.camera_off) {
            (Some(local), false) => video::draw(local, pip, f.buffer_mut()),
            _ => {
                let mid = Rect::new(pip.x, pip.y + pip.height / 2, pip.width, 1);
                f.render_widget(Paragraph::new("camera off").alignment(Alignment::Center).fg(Color::DarkGray), mid);
            }
        }
    }
    let level = (frames.mic_level.clamp(0.0, 1.0) * 10.0).round() as usize;
    let meter =
        if app.muted { "muted".to_owned() } else { format!("{}{}", "█".repeat(level), "░".repeat(10 - level)) };
    let line = Line::from(vec![
        Span::raw(format!(" {peer}  ")).bold(),
        Span::raw(clock(app.elapsed())),
        Span::raw("  mic "),
        Span::styled(meter, Style::default().fg(if app.muted { Color::Red } else { Color::Green })),
        Span::raw("  "),
        key("h"),
        Span::raw(" hang up "),
        key("m"),
        Span::raw(if app.muted { " unmute " } else { " mute " }),
        key("v"),
        Span::raw(if app.camera_off { " camera on " } else { " camera off " }),
        key("s"),
        Span::raw(" stats"),
    ]);
    f.render_widget(Paragraph::new(line), info);
    if app.show_stats {
        stats_panel(app, video_area, f);
    }
}

fn stats_panel(app: &App, area: Rect, f: &mut Frame<'_>) {
    let opt = |v: Option<f64>, unit: &str| v.map(|v| format!("{v:.1} {unit}")).unwrap_or_else(|| "–".into());
    let lines: Vec<Line<'static>> = match &app.stats {
        None => vec![Line::from("no statistics yet")],
        Some(s) => [
            ("codec", "VP8 / Opus".to_owned()),
            ("resolution", format!("{}x{}", s.width, s.height)),
            ("fps", format!("{:.1}", s.video_fps)),
            ("bitrate in", format!("{:.0} kbit/s", s.bitrate_in_kbps)),
            ("bitrate out", format!("{:.0} kbit/s", s.bitrate_out_kbps)),
            ("RTT", opt(s.rtt_ms, "ms")),
            ("loss", opt(s.loss_pct, "%")),
            ("jitter", opt(s.jitter_ms, "ms")),
            ("latency", opt(s.glass_to_glass_ms, "ms")),
        ]
        .into_iter()
        .map(|(k, v)| Line::from(format!("{k:<12}{v}")))
        .collect(),
    };
    let w = 30.min(area.width);
    let r = Rect::new(area.right().saturating_sub(w), area.y, w, (lines.len() as u16 + 2).min(area.height));
    f.render_widget(Clear, r);
    f.render_widget(Paragraph::new(lines).block(Block::bordered().title(" Stats ")), r);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::{Key, Msg};
    use crate::engine::{Report, Stats};
    use crate::model::{EndReason, Event};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use std::time::Instant;

    fn screen(app: &App, frames: &Frames) -> Vec<String> {
        sized(app, frames, 80, 18)
    }

    fn sized(app: &App, frames: &Frames, w: u16, h: u16) -> Vec<String> {
        let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
        t.draw(|f| render(app, frames, None, f)).unwrap();
        let buf = t.backend().buffer().clone();
        (0..buf.area.height)
            .map(|y| (0..buf.area.width).map(|x| buf[(x, y)].symbol().to_owned()).collect::<String>())
            .collect()
    }

    fn app() -> App {
        let mut a = App::new("alice", "wss://srv/one2one", Instant::now());
        a.update(Msg::Report(Report::Event(Event::Registered { name: "alice".into() })));
        a
    }

    fn ev(a: &mut App, e: Event) {
        a.update(Msg::Report(Report::Event(e)));
    }

    #[test]
    fn idle() {
        let s = screen(&app(), &Frames::default());
        assert_eq!(s[0].trim_end(), " one2one  alice  ● online  wss://srv/one2one");
        assert!(s.iter().any(|l| l.trim() == "You are alice."), "{s:#?}");
        assert!(s.iter().any(|l| l.trim() == "[c] call someone   [?] help   [q] quit"), "{s:#?}");
        assert_eq!(s[17].trim_end(), " online");
    }

    #[test]
    fn incoming_prompt() {
        let mut a = app();
        ev(&mut a, Event::IncomingCall { from: "bob".into() });
        let s = screen(&a, &Frames::default());
        assert!(s.iter().any(|l| l.contains("│  bob is calling: [a]ccept / [r]eject  │")), "{s:#?}");
        assert!(s.iter().any(|l| l.contains("Incoming call")), "{s:#?}");
    }

    #[test]
    fn ringing_out() {
        let mut a = app();
        a.update(Msg::Key(Key::Char('c')));
        for c in "bob".chars() {
            a.update(Msg::Key(Key::Char(c)));
        }
        a.update(Msg::Key(Key::Enter));
        let s = screen(&a, &Frames::default());
        assert!(s.iter().any(|l| l.trim() == "Calling bob… 00:00"), "{s:#?}");
        assert!(s.iter().any(|l| l.trim() == "Esc to cancel"), "{s:#?}");
        assert_eq!(s[17].trim_end(), " calling bob…");
    }

    #[test]
    fn in_call_with_stats() {
        let mut a = app();
        ev(&mut a, Event::CallStarted { peer: "bob".into() });
        a.update(Msg::Report(Report::Stats(Stats {
            video_fps: 29.9,
            width: 640,
            height: 480,
            bitrate_in_kbps: 812.0,
            bitrate_out_kbps: 790.0,
            rtt_ms: Some(1.2),
            loss_pct: Some(0.0),
            jitter_ms: Some(3.4),
            ..Default::default()
        })));
        a.update(Msg::Key(Key::Char('s')));
        let red = RgbFrame::new(2, 2, vec![[200, 0, 0]; 4]);
        let frames = Frames { remote: Some(red), local: None, mic_level: 0.5, generation: 1 };
        let s = screen(&a, &frames);
        assert!(s.iter().any(|l| l.contains("│resolution  640x480")), "{s:#?}");
        assert!(s.iter().any(|l| l.contains("│bitrate in  812 kbit/s")), "{s:#?}");
        assert!(s.iter().any(|l| l.contains("│bitrate out 790 kbit/s")), "{s:#?}");
        assert!(s.iter().any(|l| l.contains("│RTT         1.2 ms")), "{s:#?}");
        assert!(
            s[16].starts_with(" bob  00:00  mic █████░░░░░  [h] hang up [m] mute [v] camera off [s] stats"),
            "{:?}",
            s[16]
        );
        assert!(s.iter().any(|l| l.contains("camera off")), "{s:#?}");
        assert!(s.iter().any(|l| l.contains('▀')), "the remote video is drawn: {s:#?}");
    }

    #[test]
    fn ended_with_a_reason() {
        let mut a = app();
        ev(&mut a, Event::CallStarted { peer: "bob".into() });
        ev(
            &mut a,
            Event::CallEnded { peer: "bob".into(), reason: EndReason::RemoteHungUp("remote user hanged out".into()) },
        );
        let s = screen(&a, &Frames::default());
        assert_eq!(s[17].trim_end(), " bob hung up");
        assert!(s.iter().any(|l| l.trim() == "You are alice."));
    }

    #[test]
    fn a_long_caller_name_keeps_the_keys_in_the_prompt() {
        let mut a = app();
        let name = "x".repeat(64);
        ev(&mut a, Event::IncomingCall { from: name.clone() });
        let s = sized(&a, &Frames::default(), 80, 24);
        assert!(s.iter().any(|l| l.starts_with('│') && l.trim_matches([' ', '│']) == "[a]ccept / [r]eject"), "{s:#?}");
        assert!(s.iter().any(|l| l.trim_matches([' ', '│']) == "is calling"), "{s:#?}");
        assert!(s.iter().any(|l| l.trim_matches([' ', '│']) == name), "{s:#?}");
    }

    #[test]
    fn help_fits_a_small_terminal() {
        let mut a = app();
        a.update(Msg::Key(Key::Char('?')));
        let s = sized(&a, &Frames::default(), 40, 12);
        for row in ["c  call someone", "a / r  accept / reject a call", "h / Esc  hang up, close a panel", "q  quit"] {
            assert!(s.iter().any(|l| l.contains(row)), "{row:?} missing: {s:#?}");
        }
    }

    #[test]
    fn key_bar_says_what_the_keys_do_now_and_q_asks() {
        let mut a = app();
        ev(&mut a, Event::CallStarted { peer: "bob".into() });
        a.update(Msg::Key(Key::Char('m')));
        a.update(Msg::Key(Key::Char('v')));
        let s = screen(&a, &Frames::default());
        assert!(s[16].contains("[h] hang up [m] unmute [v] camera on [s] stats"), "{:?}", s[16]);
        assert!(s[16].contains(" muted "), "{:?}", s[16]);
        a.update(Msg::Key(Key::Char('q')));
        let s = screen(&a, &Frames::default());
        assert!(s.iter().any(|l| l.contains("│ Hang up and quit? [y] yes  [n] no │")), "{s:#?}");
    }

    #[test]
    fn missed_calls_show_on_the_idle_screen() {
        let mut a = app();
        ev(&mut a, Event::MissedCall { from: "carol".into() });
        ev(&mut a, Event::CallEnded { peer: "bob".into(), reason: EndReason::Missed });
        let s = screen(&a, &Frames::default());
        assert!(s.iter().any(|l| l.trim() == "Missed calls: bob, carol"), "{s:#?}");
        assert_eq!(s[17].trim_end(), " missed call from bob");
    }
}
