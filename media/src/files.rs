//! Simple media files: YUV4MPEG2 (I420) video and 16-bit PCM WAV audio.

use std::io::{self, BufRead, Read, Seek, SeekFrom, Write};

use crate::I420Frame;

/// The largest picture side a y4m header may declare.
const MAX_Y4M_SIDE: u32 = 16384;
/// The longest y4m header or FRAME line accepted.
const MAX_Y4M_LINE: u64 = 4096;

fn invalid_data(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn invalid_input(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.into())
}

/// Bytes of an I420 picture of this size.
fn i420_len(width: u32, height: u32) -> usize {
    let (w, h) = (width as usize, height as usize);
    w * h + 2 * w.div_ceil(2) * h.div_ceil(2)
}

/// Writes I420 frames as a YUV4MPEG2 stream.
#[derive(Debug)]
pub struct Y4mWriter<W: Write> {
    w: W,
    width: u32,
    height: u32,
}

impl<W: Write> Y4mWriter<W> {
    /// Writes the stream header:
    /// `YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg`.
    pub fn new(mut w: W, width: u32, height: u32, fps: u32) -> io::Result<Self> {
        writeln!(w, "YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg")?;
        Ok(Y4mWriter { w, width, height })
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    /// Appends one frame; an `InvalidInput` error if it is not of the
    /// header's size (or its data is not a whole I420 picture).
    pub fn write_frame(&mut self, f: &I420Frame) -> io::Result<()> {
        if (f.width, f.height) != (self.width, self.height) {
            return Err(invalid_input(format!(
                "frame is {}x{}, the y4m stream is {}x{}",
                f.width, f.height, self.width, self.height
            )));
        }
        let want = i420_len(f.width, f.height);
        if f.data.len() != want {
            return Err(invalid_input(format!(
                "frame has {} bytes, a {}x{} I420 picture has {want}",
                f.data.len(),
                f.width,
                f.height
            )));
        }
        self.w.write_all(b"FRAME\n")?;
        self.w.write_all(&f.data)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }

    /// Flushes and returns the underlying writer.
    pub fn into_inner(mut self) -> io::Result<W> {
        self.w.flush()?;
        Ok(self.w)
    }
}

/// Reads a YUV4MPEG2 stream of 8-bit 4:2:0 pictures.
#[derive(Debug)]
pub struct Y4mReader<R: BufRead> {
    r: R,
    width: u32,
    height: u32,
    fps: f64,
}

/// Reads one `\n`-terminated line of at most `MAX_Y4M_LINE` bytes, without
/// the `\n`; `None` at a clean end of stream.
fn read_line(r: &mut impl BufRead, what: &str) -> io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    r.take(MAX_Y4M_LINE + 1).read_until(b'\n', &mut line)?;
    if line.is_empty() {
        return Ok(None);
    }
    if line.pop() != Some(b'\n') {
        return Err(if line.len() as u64 >= MAX_Y4M_LINE {
            invalid_data(format!("y4m {what} is longer than {MAX_Y4M_LINE} bytes"))
        } else {
            io::Error::new(io::ErrorKind::UnexpectedEof, format!("y4m stream ends inside the {what}"))
        });
    }
    Ok(Some(line))
}

impl<R: BufRead> Y4mReader<R> {
    /// Reads and checks the stream header. `W` and `H` are required; `F`
    /// defaults to 25:1 (as in ffmpeg) when missing; `C` must be 8-bit 4:2:0
    /// (`420`, `420jpeg`, `420paldv`, `420mpeg2`) or missing. Anything else is
    /// an `InvalidData` error.
    pub fn open(mut r: R) -> io::Result<Self> {
        let header = read_line(&mut r, "header")?.ok_or_else(|| invalid_data("empty input, not a YUV4MPEG2 stream"))?;
        let header = String::from_utf8(header)
            .ok()
            .filter(|h| h.is_ascii())
            .ok_or_else(|| invalid_data("the y4m header is not ASCII text"))?;
        let mut params = header.split(' ').filter(|p| !p.is_empty());
        if params.next() != Some("YUV4MPEG2") {
            return Err(invalid_data("not a YUV4MPEG2 stream (no YUV4MPEG2 signature)"));
        }
        let (mut width, mut height, mut fps) = (None, None, 25.0f64);
        for p in params {
            let (tag, val) = p.split_at(1);
            match tag {
                "W" => {
                    width = Some(
                        val.parse::<u32>().map_err(|_| invalid_data(format!("bad width W{val} in the y4m header")))?,
                    )
                }
                "H" => {
                    height = Some(
                        val.parse::<u32>().map_err(|_| invalid_data(format!("bad height H{val} in the y4m header")))?,
                    )
                }
                "F" => {
                    let bad = || invalid_data(format!("bad frame rate F{val} in the y4m header"));
                    let (n, d) = val.split_once(':').ok_or_else(bad)?;
                    let n: u32 = n.parse().map_err(|_| bad())?;
                    let d: u32 = d.parse().map_err(|_| bad())?;
                    if n == 0 || d == 0 {
                        return Err(bad());
                    }
                    fps = f64::from(n) / f64::from(d);
                }
                "C" if !matches!(val, "420" | "420jpeg" | "420paldv" | "420mpeg2") => {
                    return Err(invalid_data(format!(
                        "y4m colour space C{val} is not supported; only 8-bit 4:2:0 (C420*)"
                    )));
                }
                // Interlacing, aspect ratio, extensions: not needed.
                _ => {}
            }
        }
        let width = width.ok_or_else(|| invalid_data("the y4m header has no width (W)"))?;
        let height = height.ok_or_else(|| invalid_data("the y4m header has no height (H)"))?;
        if !(1..=MAX_Y4M_SIDE).contains(&width) || !(1..=MAX_Y4M_SIDE).contains(&height) {
            return Err(invalid_data(format!(
                "y4m picture size {width}x{height} is out of range (1..={MAX_Y4M_SIDE})"
            )));
        }
        Ok(Y4mReader { r, width, height, fps })
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    /// Frames per second, from the header's `F` (25 if it had none).
    pub fn fps(&self) -> f64 {
        self.fps
    }

    /// The next frame; `None` at the end of the stream. A frame cut short
    /// is an `UnexpectedEof` error.
    pub fn next_frame(&mut self) -> io::Result<Option<I420Frame>> {
        let Some(line) = read_line(&mut self.r, "FRAME header")? else {
            return Ok(None);
        };
        // "FRAME", then optional parameters, which are ignored.
        if !(line.starts_with(b"FRAME") && matches!(line.get(5), None | Some(b' '))) {
            return Err(invalid_data("expected a FRAME header in the y4m stream"));
        }
        let mut data = vec![0u8; i420_len(self.width, self.height)];
        self.r.read_exact(&mut data).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                io::Error::new(e.kind(), "y4m stream ends inside a frame")
            } else {
                e
            }
        })?;
        Ok(Some(I420Frame { width: self.width, height: self.height, data }))
    }
}

/// Bytes of the header `WavWriter` writes.
const WAV_HEADER_LEN: u64 = 44;

/// Writes 16-bit PCM WAV. The RIFF and data sizes are written by `finish`;
/// if the writer is dropped without it, `Drop` writes them (ignoring errors).
#[derive(Debug)]
pub struct WavWriter<W: Write + Seek> {
    /// `None` once finished.
    w: Option<W>,
    /// Where the RIFF header starts in `w`.
    start: u64,
    data_bytes: u32,
}

impl<W: Write + Seek> WavWriter<W> {
    /// Writes a header for `channels` interleaved channels at `sample_rate`
    /// Hz, at the writer's current position.
    pub fn new(mut w: W, sample_rate: u32, channels: u16) -> io::Result<Self> {
        if channels == 0 || sample_rate == 0 {
            return Err(invalid_input(format!(
                "a WAV file needs channels and a sample rate, not {channels} channels at {sample_rate} Hz"
            )));
        }
        let block_align = channels
            .checked_mul(2)
            .ok_or_else(|| invalid_input(format!("{channels} channels are too many for WAV")))?;
        let byte_rate = sample_rate
            .checked_mul(u32::from(block_align))
            .ok_or_else(|| invalid_input("the WAV byte rate does not fit in 32 bits"))?;
        let start = w.stream_position()?;
        let mut h = Vec::with_capacity(WAV_HEADER_LEN as usize);
        h.extend_from_slice(b"RIFF");
        h.extend_from_slice(&36u32.to_le_bytes());
        h.extend_from_slice(b"WAVEfmt ");
        h.extend_from_slice(&16u32.to_le_bytes());
        h.extend_from_slice(&1u16.to_le_bytes()); // PCM
        h.extend_from_slice(&channels.to_le_bytes());
        h.extend_from_slice(&sample_rate.to_le_bytes());
        h.extend_from_slice(&byte_rate.to_le_bytes());
        h.extend_from_slice(&block_align.to_le_bytes());
        h.extend_from_slice(&16u16.to_le_bytes());
        h.extend_from_slice(b"data");
        h.extend_from_slice(&0u32.to_le_bytes());
        w.write_all(&h)?;
        Ok(WavWriter { w: Some(w), start, data_bytes: 0 })
    }

    /// Appends interleaved samples. An error if the data would outgrow
    /// what a WAV file can describe (4 GiB).
    pub fn write_samples(&mut self, pcm: &[i16]) -> io::Result<()> {
        let w = self.w.as_mut().ok_or_else(|| io::Error::other("the WAV writer is finished"))?;
        let total = u64::from(self.data_bytes) + 2 * pcm.len() as u64;
        if total > u64::from(u32::MAX) - 36 {
            return Err(invalid_input("WAV data cannot exceed 4 GiB"));
        }
        let mut buf = [0u8; 4096];
        for chunk in pcm.chunks(buf.len() / 2) {
            for (b, s) in buf.chunks_exact_mut(2).zip(chunk) {
                b.copy_from_slice(&s.to_le_bytes());
            }
            w.write_all(&buf[..2 * chunk.len()])?;
            // Count what was written, so the sizes stay right after an error.
            self.data_bytes += 2 * chunk.len() as u32;
        }
        Ok(())
    }

    /// Writes the sizes into the header and leaves the writer at the end.
    fn patch(&mut self) -> io::Result<()> {
        let Some(w) = self.w.as_mut() else {
            return Ok(());
        };
        w.seek(SeekFrom::Start(self.start + 4))?;
        w.write_all(&(36 + self.data_bytes).to_le_bytes())?;
        w.seek(SeekFrom::Start(self.start + 40))?;
        w.write_all(&self.data_bytes.to_le_bytes())?;
        w.seek(SeekFrom::Start(self.start + WAV_HEADER_LEN + u64::from(self.data_bytes)))?;
        w.flush()
    }

    /// Writes the sizes into the header, flushes, and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.patch()?;
        self.w.take().ok_or_else(|| io::Error::other("the WAV writer is finished"))
    }
}

impl<W: Write + Seek> Drop for WavWriter<W> {
    fn drop(&mut self) {
        let _ = self.patch();
    }
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// Reads a 16-bit PCM WAV file: (sample rate, channels, interleaved
/// samples). Chunks other than `fmt ` and `data` are skipped. A data size of
/// 0xFFFFFFFF (a streamed file) means "to the end of the input". Any other
/// format is an `InvalidData` error.
pub fn read_wav(mut r: impl Read) -> io::Result<(u32, u16, Vec<i16>)> {
    let mut head = [0u8; 12];
    r.read_exact(&mut head)?;
    if &head[0..4] != b"RIFF" || &head[8..12] != b"WAVE" {
        return Err(invalid_data("not a WAV file (no RIFF/WAVE header)"));
    }
    let mut fmt: Option<(u32, u16)> = None;
    loop {
        let mut ch = [0u8; 8];
        r.read_exact(&mut ch).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                io::Error::new(e.kind(), "WAV file has no data chunk")
            } else {
                e
            }
        })?;
        let id = [ch[0], ch[1], ch[2], ch[3]];
        let len = u32_at(&ch, 4);
        match &id {
            b"fmt " => {
                if !(16..=1024).contains(&len) {
                    return Err(invalid_data(format!("WAV fmt chunk of {len} bytes")));
                }
                let mut b = vec![0u8; len as usize + (len as usize & 1)];
                r.read_exact(&mut b)?;
                let mut format = u16_at(&b, 0);
                let channels = u16_at(&b, 2);
                let rate = u32_at(&b, 4);
                let bits = u16_at(&b, 14);
                // WAVE_FORMAT_EXTENSIBLE: the real format is in the sub-format GUID.
                if format == 0xFFFE && len >= 40 {
                    format = u16_at(&b, 24);
                }
                if format != 1 || bits != 16 {
                    return Err(invalid_data(format!(
                        "only 16-bit PCM WAV is supported, not format {format:#06x} with {bits} bits"
                    )));
                }
                if channels == 0 || rate == 0 {
                    return Err(invalid_data(format!("WAV file with {channels} channels at {rate} Hz")));
                }
                fmt = Some((rate, channels));
            }
            b"data" => {
                let (rate, channels) = fmt.ok_or_else(|| invalid_data("WAV data chunk before the fmt chunk"))?;
                let mut b = Vec::new();
                if len == u32::MAX {
                    r.read_to_end(&mut b)?;
                } else {
                    r.take(u64::from(len)).read_to_end(&mut b)?;
                    if b.len() < len as usize {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("WAV data chunk has {} of {len} bytes", b.len()),
                        ));
                    }
                }
                let pcm = b.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]])).collect();
                return Ok((rate, channels, pcm));
            }
            _ => {
                let skip = u64::from(len) + u64::from(len & 1);
                let skipped = io::copy(&mut (&mut r).take(skip), &mut io::sink())?;
                if skipped < skip {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "WAV file ends inside a chunk"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn frames() -> Vec<I420Frame> {
        vec![
            I420Frame::solid_rgb(64, 48, [200, 10, 10]),
            I420Frame::solid_rgb(64, 48, [10, 10, 200]),
            I420Frame::solid_rgb(64, 48, [10, 200, 10]),
        ]
    }

    #[test]
    fn y4m_round_trip() {
        let mut w = Y4mWriter::new(Vec::new(), 64, 48, 30).unwrap();
        for f in frames() {
            w.write_frame(&f).unwrap();
        }
        let bytes = w.into_inner().unwrap();
        assert!(bytes.starts_with(b"YUV4MPEG2 W64 H48 F30:1 Ip A1:1 C420jpeg\nFRAME\n"));
        let mut r = Y4mReader::open(Cursor::new(bytes)).unwrap();
        assert_eq!((r.width(), r.height(), r.fps()), (64, 48, 30.0));
        for f in frames() {
            assert_eq!(r.next_frame().unwrap().unwrap(), f);
        }
        assert!(r.next_frame().unwrap().is_none());
        assert!(r.next_frame().unwrap().is_none());
    }

    #[test]
    fn y4m_odd_size_and_frame_parameters() {
        let f = I420Frame::solid_rgb(5, 3, [1, 2, 3]);
        let mut bytes = b"YUV4MPEG2 W5 H3 F30000:1001 C420mpeg2 XYSCSS=420MPEG2\nFRAME Ixyz\n".to_vec();
        bytes.extend_from_slice(&f.data);
        let mut r = Y4mReader::open(Cursor::new(bytes)).unwrap();
        assert!((r.fps() - 29.97).abs() < 0.01);
        assert_eq!(r.next_frame().unwrap().unwrap(), f);
        assert!(r.next_frame().unwrap().is_none());
        // No C and no F: 4:2:0 at 25 fps.
        let r = Y4mReader::open(Cursor::new(b"YUV4MPEG2 W4 H4\n".to_vec())).unwrap();
        assert_eq!(r.fps(), 25.0);
    }

    #[test]
    fn y4m_writer_rejects_other_sizes() {
        let mut w = Y4mWriter::new(Vec::new(), 64, 48, 30).unwrap();
        let e = w.write_frame(&I420Frame::solid_rgb(32, 32, [0, 0, 0])).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let mut short = I420Frame::solid_rgb(64, 48, [0, 0, 0]);
        short.data.pop();
        let e = w.write_frame(&short).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        // Nothing was written for either.
        assert_eq!(w.into_inner().unwrap().len(), 41);
    }

    #[test]
    fn y4m_reader_rejects_bad_input() {
        let bad = |s: &[u8]| Y4mReader::open(Cursor::new(s.to_vec())).unwrap_err();
        for h in [
            &b"YUV4MPEG2 W4 H4 C444\n"[..],
            b"YUV4MPEG2 W4 H4 C420p10\n",
            b"YUV4MPEG2 W4 H4 Cmono\n",
            b"YUV4MPEG2 H4\n",
            b"YUV4MPEG2 W4 Hx\n",
            b"YUV4MPEG2 W4 H4 F30:0\n",
            b"YUV4MPEG2 W0 H4\n",
            b"YUV4MPEG2 W100000 H4\n",
            b"RIFF\n",
            b"",
        ] {
            assert_eq!(bad(h).kind(), io::ErrorKind::InvalidData, "{h:?}");
        }
        let e = bad(b"YUV4MPEG2 W4 H4 C444\n");
        assert!(e.to_string().contains("C444"), "{e}");
        // A header without its newline, a frame cut short, a missing FRAME.
        assert_eq!(bad(b"YUV4MPEG2 W4 H4").kind(), io::ErrorKind::UnexpectedEof);
        let mut r = Y4mReader::open(Cursor::new(b"YUV4MPEG2 W4 H4\nFRAME\n123".to_vec())).unwrap();
        assert_eq!(r.next_frame().unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        let mut r = Y4mReader::open(Cursor::new(b"YUV4MPEG2 W4 H4\nFRAMES\n".to_vec())).unwrap();
        assert_eq!(r.next_frame().unwrap_err().kind(), io::ErrorKind::InvalidData);
    }

    fn tone(n: usize) -> Vec<i16> {
        (0..n).map(|i| ((i * 7919) % 65536) as u16 as i16).collect()
    }

    #[test]
    fn wav_round_trip() {
        for (rate, channels, n) in [(48_000, 1u16, 1000), (8_000, 2, 5000), (44_100, 2, 0)] {
            let pcm = tone(n);
            let mut w = WavWriter::new(Cursor::new(Vec::new()), rate, channels).unwrap();
            let (a, b) = pcm.split_at(n / 3);
            w.write_samples(a).unwrap();
            w.write_samples(b).unwrap();
            let bytes = w.finish().unwrap().into_inner();
            assert_eq!(bytes.len(), 44 + 2 * n);
            assert_eq!(u32_at(&bytes, 4) as usize, 36 + 2 * n);
            assert_eq!(u32_at(&bytes, 40) as usize, 2 * n);
            let (r, c, back) = read_wav(Cursor::new(bytes)).unwrap();
            assert_eq!((r, c), (rate, channels));
            assert_eq!(back, pcm);
        }
    }

    #[test]
    fn wav_sizes_are_patched_on_drop() {
        let pcm = tone(300);
        let mut buf = Cursor::new(vec![0xAA; 7]);
        buf.set_position(7);
        {
            let mut w = WavWriter::new(&mut buf, 16_000, 1).unwrap();
            w.write_samples(&pcm).unwrap();
        }
        let bytes = buf.into_inner();
        assert_eq!(u32_at(&bytes, 7 + 40), 600);
        let (_, _, back) = read_wav(&bytes[7..]).unwrap();
        assert_eq!(back, pcm);
    }

    #[test]
    fn wav_reader_skips_chunks_and_rejects_other_formats() {
        let wav = |fmt: &[u8], extra: &[u8], data: &[u8]| {
            let mut b = b"RIFF\0\0\0\0WAVE".to_vec();
            b.extend_from_slice(extra);
            b.extend_from_slice(b"fmt ");
            b.extend_from_slice(&(fmt.len() as u32).to_le_bytes());
            b.extend_from_slice(fmt);
            b.extend_from_slice(b"LIST\x03\0\0\0abc\0");
            b.extend_from_slice(b"data");
            b.extend_from_slice(&(data.len() as u32).to_le_bytes());
            b.extend_from_slice(data);
            b
        };
        let fmt = |format: u16, bits: u16| {
            let mut f = Vec::new();
            f.extend_from_slice(&format.to_le_bytes());
            f.extend_from_slice(&2u16.to_le_bytes());
            f.extend_from_slice(&8000u32.to_le_bytes());
            f.extend_from_slice(&(8000u32 * 2 * u32::from(bits / 8)).to_le_bytes());
            f.extend_from_slice(&(2 * bits / 8).to_le_bytes());
            f.extend_from_slice(&bits.to_le_bytes());
            f
        };
        let data = [1u8, 0, 2, 0, 0xFF, 0xFF, 0, 0x80];
        let ok = read_wav(&wav(&fmt(1, 16), b"JUNK\x01\0\0\0x\0", &data)[..]).unwrap();
        assert_eq!(ok, (8000, 2, vec![1, 2, -1, i16::MIN]));
        for (format, bits) in [(1, 8), (1, 24), (3, 32), (6, 8)] {
            let e = read_wav(&wav(&fmt(format, bits), b"", &data)[..]).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            assert!(e.to_string().contains("16-bit PCM"), "{e}");
        }
        let e = read_wav(&b"RIFF\0\0\0\0AVI LIST"[..]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        // Data cut short.
        let mut cut = wav(&fmt(1, 16), b"", &data);
        cut.truncate(cut.len() - 2);
        assert_eq!(read_wav(&cut[..]).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }
}
