//! Video in the terminal: frames become truecolor half-block cells (`▀`,
//! the top pixel in the foreground, the bottom one in the background),
//! scaled to the pane with the aspect ratio kept. Pure functions.

use one2one_media::I420Frame;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Color;

/// A small RGB picture, ready to draw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbFrame {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<[u8; 3]>,
}

impl RgbFrame {
    #[cfg(test)]
    pub fn new(width: u32, height: u32, pixels: Vec<[u8; 3]>) -> RgbFrame {
        assert_eq!(pixels.len(), (width * height) as usize, "pixel count");
        RgbFrame { width, height, pixels }
    }

    /// Converts and shrinks (nearest neighbour) to at most `max_w`x`max_h`.
    pub fn from_i420(f: &I420Frame, max_w: u32, max_h: u32) -> RgbFrame {
        let scale = (f64::from(max_w) / f64::from(f.width)).min(f64::from(max_h) / f64::from(f.height)).min(1.0);
        let w = ((f64::from(f.width) * scale) as u32).max(1);
        let h = ((f64::from(f.height) * scale) as u32).max(1);
        let mut pixels = Vec::with_capacity((w * h) as usize);
        for y in 0..h {
            let sy = (y * f.height / h).min(f.height - 1);
            for x in 0..w {
                let sx = (x * f.width / w).min(f.width - 1);
                pixels.push(f.rgb_at(sx, sy));
            }
        }
        RgbFrame { width: w, height: h, pixels }
    }

    fn at(&self, x: u32, y: u32) -> [u8; 3] {
        self.pixels[(y.min(self.height - 1) * self.width + x.min(self.width - 1)) as usize]
    }
}

/// Where a `w`x`h` picture lands in `area` (in half-block pixels: one cell
/// is one pixel wide and two tall), centred, aspect kept.
pub fn fit(w: u32, h: u32, area: Rect) -> Rect {
    let (pw, ph) = (u32::from(area.width), u32::from(area.height) * 2);
    if w == 0 || h == 0 || pw == 0 || ph == 0 {
        return Rect::new(area.x, area.y, 0, 0);
    }
    let scale = (f64::from(pw) / f64::from(w)).min(f64::from(ph) / f64::from(h));
    let cw = ((f64::from(w) * scale).round() as u32).clamp(1, pw) as u16;
    let ch = (((f64::from(h) * scale).round() as u32).div_ceil(2)).clamp(1, u32::from(area.height)) as u16;
    Rect::new(area.x + (area.width - cw) / 2, area.y + (area.height - ch) / 2, cw, ch)
}

/// Draws `frame` into `area` of `buf`.
pub fn draw(frame: &RgbFrame, area: Rect, buf: &mut Buffer) {
    let target = fit(frame.width, frame.height, area);
    let (tw, th) = (u32::from(target.width), u32::from(target.height) * 2);
    for cy in 0..target.height {
        for cx in 0..target.width {
            let sx = u32::from(cx) * frame.width / tw;
            let top = frame.at(sx, (u32::from(cy) * 2) * frame.height / th);
            let bottom = frame.at(sx, (u32::from(cy) * 2 + 1) * frame.height / th);
            if let Some(cell) = buf.cell_mut((target.x + cx, target.y + cy)) {
                cell.set_symbol("▀")
                    .set_fg(Color::Rgb(top[0], top[1], top[2]))
                    .set_bg(Color::Rgb(bottom[0], bottom[1], bottom[2]));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_by_four_gives_exact_cells() {
        let c = |r, g, b| [r, g, b];
        #[rustfmt::skip]
        let px = vec![
            c(255, 0, 0), c(0, 255, 0), c(0, 0, 255), c(255, 255, 0),
            c(0, 255, 255), c(255, 0, 255), c(10, 20, 30), c(40, 50, 60),
            c(1, 2, 3), c(4, 5, 6), c(7, 8, 9), c(10, 11, 12),
            c(200, 100, 50), c(50, 100, 200), c(0, 0, 0), c(255, 255, 255),
        ];
        let f = RgbFrame::new(4, 4, px.clone());
        let area = Rect::new(0, 0, 4, 2);
        let mut buf = Buffer::empty(area);
        draw(&f, area, &mut buf);
        for cy in 0..2u16 {
            for cx in 0..4u16 {
                let cell = &buf[(cx, cy)];
                let top = px[(cy as usize * 2) * 4 + cx as usize];
                let bottom = px[(cy as usize * 2 + 1) * 4 + cx as usize];
                assert_eq!(cell.symbol(), "▀");
                assert_eq!(cell.fg, Color::Rgb(top[0], top[1], top[2]), "fg at {cx},{cy}");
                assert_eq!(cell.bg, Color::Rgb(bottom[0], bottom[1], bottom[2]), "bg at {cx},{cy}");
            }
        }
    }

    #[test]
    fn keeps_the_aspect_ratio() {
        // 4:3 into a wide pane: 80x24 cells = 80x48 pixels -> 64x48, centred.
        assert_eq!(fit(640, 480, Rect::new(0, 0, 80, 24)), Rect::new(8, 0, 64, 24));
        // Into a tall pane: 20x40 cells = 20x80 pixels -> 20x15 -> 8 rows.
        assert_eq!(fit(640, 480, Rect::new(0, 0, 20, 40)), Rect::new(0, 16, 20, 8));
    }
}
