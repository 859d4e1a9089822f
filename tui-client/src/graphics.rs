//! Remote video through a terminal graphics protocol (kitty, sixel or
//! iTerm2, via ratatui-image) where the terminal has one; everywhere else
//! the half-block renderer in [`crate::video`] draws it.
//!
//! An encoded picture is kept per (frame generation, area), so a redraw
//! for another reason (the call timer, a key) does not encode again.

use std::str::FromStr;

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::widgets::Widget;
use ratatui_image::picker::{Picker, ProtocolType};
use ratatui_image::protocol::Protocol;
use ratatui_image::{Image, Resize};

use crate::video::RgbFrame;

/// `--video-render auto | halfblocks | kitty | sixel | iterm2`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenderChoice {
    Auto,
    Halfblocks,
    Kitty,
    Sixel,
    Iterm2,
}

impl FromStr for RenderChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "auto" => RenderChoice::Auto,
            "halfblocks" => RenderChoice::Halfblocks,
            "kitty" => RenderChoice::Kitty,
            "sixel" => RenderChoice::Sixel,
            "iterm2" => RenderChoice::Iterm2,
            _ => return Err("expected auto, halfblocks, kitty, sixel or iterm2".into()),
        })
    }
}

/// Whether a protocol the user forced can be shown: a terminal that was
/// asked and offers no graphics protocol at all, or did not answer, gets
/// half-blocks and a note instead.
fn forced_fits(p: ProtocolType, asked: Option<ProtocolType>, askable: bool) -> Result<(), String> {
    match asked {
        Some(ProtocolType::Halfblocks) => {
            Err(format!("this terminal shows no {} graphics: video drawn with half-blocks", name(p)))
        }
        None if askable => {
            Err(format!("this terminal did not answer for {} graphics: video drawn with half-blocks", name(p)))
        }
        _ => Ok(()),
    }
}

fn name(p: ProtocolType) -> &'static str {
    match p {
        ProtocolType::Halfblocks => "halfblocks",
        ProtocolType::Sixel => "sixel",
        ProtocolType::Kitty => "kitty",
        ProtocolType::Iterm2 => "iterm2",
    }
}

/// The terminal multiplexer we run in, if any (`$TMUX` set, or a `TERM`
/// of screen or tmux).
fn multiplexer(in_tmux: bool, term: &str) -> Option<&'static str> {
    if in_tmux || term.starts_with("tmux") {
        Some("tmux")
    } else if term.starts_with("screen") {
        Some("screen")
    } else {
        None
    }
}

/// A graphics protocol and the last picture encoded for it.
pub struct Graphics {
    picker: Picker,
    cached: Option<(u64, Rect, Protocol)>,
}

impl Graphics {
    /// Picks the renderer: `None` means half-blocks, with a note for the
    /// person when a protocol they asked for cannot be shown here. `Auto`
    /// asks the terminal (call it before the TUI reads keys).
    pub fn detect(choice: RenderChoice) -> (Option<Graphics>, Option<String>) {
        let protocol = match choice {
            RenderChoice::Halfblocks => return (None, None),
            RenderChoice::Kitty => Some(ProtocolType::Kitty),
            RenderChoice::Sixel => Some(ProtocolType::Sixel),
            RenderChoice::Iterm2 => Some(ProtocolType::Iterm2),
            RenderChoice::Auto => None,
        };
        let term = std::env::var("TERM").unwrap_or_default();
        if let (Some(p), Some(host)) = (protocol, multiplexer(std::env::var_os("TMUX").is_some(), &term)) {
            // tmux and screen neither pass these pictures through nor
            // answer for them: the screen garbles or stays blank.
            let note = format!("{} graphics do not pass through {host}: video drawn with half-blocks", name(p));
            return (None, Some(note));
        }
        // Multiplexers and consoles are not asked: a query that tmux leaves
        // unanswered also leaves a reader behind that eats the first key.
        let askable = multiplexer(std::env::var_os("TMUX").is_some(), &term).is_none()
            && !term.is_empty()
            && !["linux", "dumb"].iter().any(|t| term.starts_with(t));
        let asked = if askable { Picker::from_query_stdio().ok() } else { None };
        if let Some(p) = protocol
            && let Err(note) = forced_fits(p, asked.as_ref().map(Picker::protocol_type), askable)
        {
            return (None, Some(note));
        }
        match (protocol, asked) {
            (None, None) => (None, None),
            (None, Some(asked)) => (Graphics::with_picker(asked), None),
            // Forced: the terminal may still have told us its cell size.
            (Some(p), asked) => {
                let mut picker = asked.unwrap_or_else(Picker::halfblocks);
                picker.set_protocol_type(p);
                (Graphics::with_picker(picker), None)
            }
        }
    }

    /// A picker that settles on half-blocks gives `None`: ours draws exact
    /// colours and costs less.
    pub fn with_picker(picker: Picker) -> Option<Graphics> {
        (picker.protocol_type() != ProtocolType::Halfblocks).then_some(Graphics { picker, cached: None })
    }

    pub fn protocol_name(&self) -> &'static str {
        name(self.picker.protocol_type())
    }

    /// Draws `frame` (picture number `generation`) scaled into `area`,
    /// aspect kept and centred. Encodes only when either changed.
    pub fn draw(&mut self, frame: &RgbFrame, generation: u64, area: Rect, buf: &mut Buffer) {
        if area.width == 0 || area.height == 0 {
            return;
        }
        let fresh = matches!(&self.cached, Some((g, a, _)) if *g == generation && *a == area);
        if !fresh {
            let bytes: Vec<u8> = frame.pixels.iter().flatten().copied().collect();
            let Some(img) = image::RgbImage::from_raw(frame.width, frame.height, bytes) else {
                return;
            };
            match self.picker.new_protocol(image::DynamicImage::ImageRgb8(img), area.as_size(), Resize::Scale(None)) {
                Ok(p) => self.cached = Some((generation, area, p)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot encode the picture for the terminal");
                    return;
                }
            }
        }
        if let Some((_, _, proto)) = &self.cached {
            let size = proto.size();
            let x = area.x + area.width.saturating_sub(size.width) / 2;
            let y = area.y + area.height.saturating_sub(size.height) / 2;
            let at = Rect::new(x, y, size.width.min(area.width), size.height.min(area.height));
            Image::new(proto).render(at, buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picker(p: ProtocolType) -> Picker {
        let mut picker = Picker::halfblocks();
        picker.set_protocol_type(p);
        picker
    }

    fn frame() -> RgbFrame {
        let pixels = (0..64 * 48).map(|i| if i % 64 < 32 { [200, 30, 30] } else { [30, 30, 200] }).collect();
        RgbFrame { width: 64, height: 48, pixels }
    }

    /// The first cell of the picture carries the protocol's escape
    /// sequence; the others are left for the terminal to paint.
    #[test]
    fn each_protocol_writes_its_escape_sequence() {
        for (p, intro) in
            [(ProtocolType::Sixel, "\x1bP"), (ProtocolType::Kitty, "\x1b_G"), (ProtocolType::Iterm2, "\x1b]1337;File=")]
        {
            let mut g = Graphics::with_picker(picker(p)).expect("not half-blocks");
            let area = Rect::new(0, 0, 40, 12);
            let mut buf = Buffer::empty(area);
            g.draw(&frame(), 1, area, &mut buf);
            let all: String = (0..12).flat_map(|y| (0..40).map(move |x| (x, y))).map(|c| buf[c].symbol()).collect();
            assert!(all.contains(intro), "{p:?}: no {intro:?} in the buffer");
            // Redrawing the same picture reuses the encoding.
            let before = g.cached.as_ref().map(|(_, _, p)| p.size());
            g.draw(&frame(), 1, area, &mut buf);
            assert_eq!(before, g.cached.as_ref().map(|(_, _, p)| p.size()));
        }
    }

    #[test]
    fn halfblocks_mean_our_renderer() {
        assert!(Graphics::with_picker(Picker::halfblocks()).is_none());
        assert!(Graphics::detect(RenderChoice::Halfblocks).0.is_none());
        assert_eq!(multiplexer(true, "xterm-256color"), Some("tmux"));
        assert_eq!(multiplexer(false, "screen-256color"), Some("screen"));
        assert_eq!(multiplexer(false, "xterm-kitty"), None);
        // A forced protocol on a terminal that has none is refused with a note.
        assert!(
            forced_fits(ProtocolType::Kitty, Some(ProtocolType::Halfblocks), true)
                .is_err_and(|n| n == "this terminal shows no kitty graphics: video drawn with half-blocks")
        );
        assert!(forced_fits(ProtocolType::Sixel, None, true).is_err());
        assert!(forced_fits(ProtocolType::Sixel, Some(ProtocolType::Sixel), true).is_ok());
        // A terminal that offers another protocol may still take this one.
        assert!(forced_fits(ProtocolType::Sixel, Some(ProtocolType::Kitty), true).is_ok());
        assert!(forced_fits(ProtocolType::Iterm2, None, false).is_ok(), "not asked (a console): as forced");
        assert_eq!("sixel".parse(), Ok(RenderChoice::Sixel));
        assert!("png".parse::<RenderChoice>().is_err());
    }
}
