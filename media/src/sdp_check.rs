//! What an SDP offer can carry through the relay, sans IO: the m-lines and
//! their `a=rtpmap`s, nothing else. The signaling core asks [`check_offer`]
//! before it rings anyone; the relay asks [`common_media`] which kinds two
//! offers can exchange, so that both agree on one rule.
//!
//! The relay carries Opus audio and one video codec (VP8, else H.264) and
//! never transcodes. A call needs something it can carry, not video: an
//! offer with audio only, or with a video m-line that is rejected (port 0),
//! inactive or has no usable codec, is an audio-only call.

use std::fmt;

/// The video codec both legs of a call use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    Vp8,
    H264,
}

impl VideoCodec {
    pub fn mime(self) -> &'static str {
        match self {
            VideoCodec::Vp8 => "video/VP8",
            VideoCodec::H264 => "video/H264",
        }
    }
}

/// The direction of an m-line, from the offerer's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    #[default]
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    /// The offerer sends on this m-line.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }
    /// The offerer receives on this m-line.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }
    fn parse(attr: &str) -> Option<Direction> {
        match attr {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }
}

/// The first live (port ≠ 0, not inactive) m-line of one kind.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Section {
    pub mid: Option<String>,
    pub direction: Direction,
    pub opus: bool,
    pub vp8: bool,
    pub h264: bool,
}

impl Section {
    /// The video codec of this section that the relay prefers.
    fn video_codec(&self) -> Option<VideoCodec> {
        if self.vp8 {
            Some(VideoCodec::Vp8)
        } else if self.h264 {
            Some(VideoCodec::H264)
        } else {
            None
        }
    }
}

/// What an offer has that the relay can carry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OfferSummary {
    /// The first live audio m-line, if any.
    pub audio: Option<Section>,
    /// The first live video m-line, if any.
    pub video: Option<Section>,
}

impl OfferSummary {
    /// Opus on a live audio m-line.
    pub fn has_audio(&self) -> bool {
        self.audio.as_ref().is_some_and(|s| s.opus)
    }
    /// VP8 or H.264 on a live video m-line.
    pub fn has_video(&self) -> bool {
        self.video.as_ref().and_then(Section::video_codec).is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OfferError {
    /// Not an SDP session description at all.
    NotSdp,
    /// No audio or video m-line that is live (port ≠ 0 and not inactive).
    NoMedia,
    /// Live m-lines, but neither Opus audio nor VP8/H.264 video.
    NoUsableCodec,
    /// Two offers that share no codec of any kind (only from [`common_media`]).
    NoCommonCodec,
}

impl fmt::Display for OfferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OfferError::NotSdp => "the offer is not an SDP session description",
            OfferError::NoMedia => "the offer has no audio or video to send or receive",
            OfferError::NoUsableCodec => "the offer has neither Opus audio nor VP8 or H.264 video",
            OfferError::NoCommonCodec => "no common codec: the two sides share neither Opus audio nor a video codec",
        })
    }
}

impl std::error::Error for OfferError {}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Audio,
    Video,
    Other,
}

/// One m-line while it is being read.
struct Reading<'a> {
    kind: Kind,
    live: bool,
    formats: Vec<&'a str>,
    section: Section,
    direction: Option<Direction>,
}

impl Reading<'_> {
    fn finish(mut self, session_dir: Direction, out: &mut OfferSummary) {
        self.section.direction = self.direction.unwrap_or(session_dir);
        if !self.live || self.section.direction == Direction::Inactive {
            return;
        }
        let slot = match self.kind {
            Kind::Audio => &mut out.audio,
            Kind::Video => &mut out.video,
            Kind::Other => return,
        };
        if slot.is_none() {
            *slot = Some(self.section);
        }
    }
}

/// Reads what an offer can carry. Fails on text that is not SDP, on an
/// offer with no live audio or video, and on one with neither Opus nor
/// VP8/H.264: such a call cannot be set up whoever answers it.
pub fn check_offer(sdp: &str) -> Result<OfferSummary, OfferError> {
    let summary = summarize(sdp)?;
    if summary.audio.is_none() && summary.video.is_none() {
        return Err(OfferError::NoMedia);
    }
    if !summary.has_audio() && !summary.has_video() {
        return Err(OfferError::NoUsableCodec);
    }
    Ok(summary)
}

/// Like [`check_offer`], without judging: the summary of any SDP.
pub fn summarize(sdp: &str) -> Result<OfferSummary, OfferError> {
    let mut lines = sdp.lines().map(str::trim).filter(|l| !l.is_empty());
    if lines.next().is_none_or(|l| !l.starts_with("v=")) {
        return Err(OfferError::NotSdp);
    }
    let mut out = OfferSummary::default();
    let mut session_dir = Direction::SendRecv;
    let mut current: Option<Reading> = None;
    for line in lines {
        let Some((key, value)) = line.split_once('=') else {
            return Err(OfferError::NotSdp);
        };
        if key.len() != 1 {
            return Err(OfferError::NotSdp);
        }
        match key {
            "m" => {
                if let Some(r) = current.take() {
                    r.finish(session_dir, &mut out);
                }
                let mut f = value.split_ascii_whitespace();
                let kind = match f.next() {
                    Some("audio") => Kind::Audio,
                    Some("video") => Kind::Video,
                    _ => Kind::Other,
                };
                // `port` or `port/count`; 0 rejects the m-line.
                let port = f.next().and_then(|p| p.split('/').next()).and_then(|p| p.parse::<u16>().ok());
                let _proto = f.next();
                current = Some(Reading {
                    kind,
                    live: port.is_some_and(|p| p != 0),
                    formats: f.collect(),
                    section: Section::default(),
                    direction: None,
                });
            }
            "a" => {
                let (name, arg) = value.split_once(':').unwrap_or((value, ""));
                match current.as_mut() {
                    None => {
                        if let Some(d) = Direction::parse(name) {
                            session_dir = d;
                        }
                    }
                    Some(r) => {
                        if let Some(d) = Direction::parse(name) {
                            r.direction = Some(d);
                        } else if name == "mid" {
                            r.section.mid = Some(arg.trim().to_owned());
                        } else if name == "rtpmap" {
                            read_rtpmap(arg, r);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    if let Some(r) = current.take() {
        r.finish(session_dir, &mut out);
    }
    Ok(out)
}

/// `PT NAME/RATE[/CHANNELS]`, counted only when PT is in the m-line's list.
fn read_rtpmap(arg: &str, r: &mut Reading) {
    let Some((pt, enc)) = arg.trim().split_once(' ') else {
        return;
    };
    if !r.formats.contains(&pt) {
        return;
    }
    let mut parts = enc.trim().split('/');
    let name = parts.next().unwrap_or("");
    let rate = parts.next().unwrap_or("");
    match (r.kind, rate) {
        (Kind::Audio, "48000") if name.eq_ignore_ascii_case("opus") => r.section.opus = true,
        (Kind::Video, "90000") if name.eq_ignore_ascii_case("VP8") => r.section.vp8 = true,
        (Kind::Video, "90000") if name.eq_ignore_ascii_case("H264") => r.section.h264 = true,
        _ => {}
    }
}

/// What two offers can exchange through the relay, per kind and direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CommonMedia {
    /// Opus on both sides.
    pub audio: bool,
    /// The one video codec both legs use, when both sides have one.
    pub video: Option<VideoCodec>,
    /// `[caller → callee, callee → caller]`: audio flows that way.
    pub audio_to: [bool; 2],
    /// `[caller → callee, callee → caller]`: video flows that way.
    pub video_to: [bool; 2],
}

impl CommonMedia {
    /// Media of some kind flows from side `from` (0 = caller, 1 = callee)
    /// to the other.
    pub fn flows(&self, from: usize) -> bool {
        self.audio_to.get(from).copied().unwrap_or(false) || self.video_to.get(from).copied().unwrap_or(false)
    }
}

/// Which kinds the caller's and the callee's offers can exchange: Opus when
/// both have it, and VP8 when both have it, else H.264 when both have that.
/// A kind that only one side has is simply not carried (a camera sends to
/// a callee without video nothing at all). Fails only when nothing at all
/// could flow either way.
pub fn common_media(caller: &OfferSummary, callee: &OfferSummary) -> Result<CommonMedia, OfferError> {
    let both = |f: fn(&Section) -> bool, a: &Option<Section>, b: &Option<Section>| {
        a.as_ref().is_some_and(f) && b.as_ref().is_some_and(f)
    };
    let audio = both(|s| s.opus, &caller.audio, &callee.audio);
    let video = if both(|s| s.vp8, &caller.video, &callee.video) {
        Some(VideoCodec::Vp8)
    } else if both(|s| s.h264, &caller.video, &callee.video) {
        Some(VideoCodec::H264)
    } else {
        None
    };
    let dir = |s: &Option<Section>| s.as_ref().map(|s| s.direction).unwrap_or(Direction::Inactive);
    let flow =
        |on: bool, a: Direction, b: Direction| [on && a.sends() && b.receives(), on && b.sends() && a.receives()];
    let audio_to = flow(audio, dir(&caller.audio), dir(&callee.audio));
    let video_to = flow(video.is_some(), dir(&caller.video), dir(&callee.video));
    let common = CommonMedia { audio, video, audio_to, video_to };
    if !common.flows(0) && !common.flows(1) {
        return Err(OfferError::NoCommonCodec);
    }
    Ok(common)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n";

    fn sdp(body: &str) -> String {
        format!("{HEAD}{body}")
    }

    const AUDIO: &str = "m=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\na=mid:0\r\na=sendrecv\r\na=rtpmap:111 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\n";
    const VIDEO: &str = "m=video 9 UDP/TLS/RTP/SAVPF 96 97 102\r\na=mid:1\r\na=sendrecv\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\na=rtpmap:102 H264/90000\r\n";

    #[test]
    fn a_browser_offer_has_both_kinds() {
        let s = check_offer(&sdp(&format!("{AUDIO}{VIDEO}"))).unwrap();
        assert!(s.has_audio() && s.has_video());
        assert_eq!(s.audio.as_ref().unwrap().mid.as_deref(), Some("0"));
        let v = s.video.unwrap();
        assert!(v.vp8 && v.h264 && v.direction == Direction::SendRecv);
    }

    #[test]
    fn audio_only_offers_are_fine() {
        for video in [
            "",
            "m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n",
            "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=inactive\r\na=rtpmap:96 VP8/90000\r\n",
            "m=video 9 UDP/TLS/RTP/SAVPF 98\r\na=recvonly\r\na=rtpmap:98 AV1/90000\r\n",
        ] {
            let s = check_offer(&sdp(&format!("{AUDIO}{video}"))).unwrap_or_else(|e| panic!("{video}: {e}"));
            assert!(s.has_audio() && !s.has_video(), "{video}: {s:?}");
        }
    }

    #[test]
    fn offers_that_cannot_be_carried_are_refused() {
        assert_eq!(check_offer(""), Err(OfferError::NotSdp));
        assert_eq!(check_offer("hello"), Err(OfferError::NotSdp));
        assert_eq!(check_offer("{\"sdp\":\"v=0\"}"), Err(OfferError::NotSdp));
        assert_eq!(check_offer(&sdp("garbage line\r\n")), Err(OfferError::NotSdp));
        assert_eq!(check_offer(HEAD), Err(OfferError::NoMedia));
        assert_eq!(check_offer(&sdp("m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n")), Err(OfferError::NoMedia));
        assert_eq!(
            check_offer(&sdp("m=audio 0 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n")),
            Err(OfferError::NoMedia)
        );
        let pcmu_av1 =
            "m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\nm=video 9 RTP/AVP 98\r\na=rtpmap:98 AV1/90000\r\n";
        assert_eq!(check_offer(&sdp(pcmu_av1)), Err(OfferError::NoUsableCodec));
        // An rtpmap for a payload type the m-line does not list counts for nothing.
        let unlisted = "m=audio 9 RTP/AVP 0\r\na=rtpmap:111 opus/48000/2\r\n";
        assert_eq!(check_offer(&sdp(unlisted)), Err(OfferError::NoUsableCodec));
    }

    #[test]
    fn session_level_direction_is_the_default() {
        let s = summarize(&sdp(&format!("a=recvonly\r\n{AUDIO}m=video 9 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n")))
            .unwrap();
        assert_eq!(s.audio.unwrap().direction, Direction::SendRecv);
        assert_eq!(s.video.unwrap().direction, Direction::RecvOnly);
    }

    #[test]
    fn bare_newlines_and_odd_input_do_not_panic() {
        let lf = sdp(&format!("{AUDIO}{VIDEO}")).replace("\r\n", "\n");
        assert!(check_offer(&lf).unwrap().has_video());
        for odd in ["v=", "v=0\nm=", "v=0\nm=audio", "v=0\nm=audio 9", "v=0\nm=audio x y 1\na=rtpmap:", "v=0\na=:"] {
            let _ = check_offer(odd);
        }
    }

    #[test]
    fn common_media_per_kind_and_direction() {
        let full = check_offer(&sdp(&format!("{AUDIO}{VIDEO}"))).unwrap();
        let audio_only = check_offer(&sdp(AUDIO)).unwrap();
        let c = common_media(&full, &full).unwrap();
        assert_eq!(c.video, Some(VideoCodec::Vp8));
        assert_eq!((c.audio_to, c.video_to), ([true, true], [true, true]));

        // A callee without a camera: the caller's video goes nowhere, audio both ways.
        let c = common_media(&full, &audio_only).unwrap();
        assert!(c.audio && c.video.is_none());
        assert_eq!((c.audio_to, c.video_to), ([true, true], [false, false]));

        // A caller that only receives video still sees the callee's camera.
        let watcher = check_offer(&sdp(&format!("{AUDIO}{}", VIDEO.replace("sendrecv", "recvonly")))).unwrap();
        let c = common_media(&watcher, &full).unwrap();
        assert_eq!(c.video_to, [false, true]);

        // H.264 when VP8 is missing on one side.
        let h264 = check_offer(&sdp("m=video 9 RTP/AVP 102\r\na=rtpmap:102 H264/90000\r\n")).unwrap();
        assert_eq!(common_media(&full, &h264).unwrap().video, Some(VideoCodec::H264));

        // Audio only against video only: nothing in common.
        assert_eq!(common_media(&audio_only, &h264), Err(OfferError::NoCommonCodec));
    }
}
