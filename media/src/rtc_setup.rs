//! Peer-connection set-up shared by the server's relay and the client:
//! codecs, interceptors, and the interceptor that surfaces keyframe requests.

use std::collections::VecDeque;
use std::time::Instant;

use rtc::interceptor::{Attribute, Interceptor, Packet, Slot, StreamInfo, TaggedPacket};
use rtc::media_stream::MediaStreamTrack;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::sansio::Protocol;
use webrtc::peer_connection::{MediaEngine, RTCIceCandidateInit, Registry, register_default_interceptors};

pub use crate::sdp_check::VideoCodec;

impl VideoCodec {
    /// VP8 when both offers have it on a live video m-line, else H.264
    /// when both have that.
    pub fn choose(offers: [&str; 2]) -> Option<VideoCodec> {
        let [a, b] = offers.map(|o| crate::sdp_check::summarize(o).unwrap_or_default());
        crate::sdp_check::common_media(&a, &b).ok().and_then(|c| c.video)
    }

    /// The codec as an outgoing track announces it.
    pub fn codec(self) -> RTCRtpCodec {
        RTCRtpCodec { mime_type: self.mime().into(), clock_rate: 90000, ..Default::default() }
    }
}

fn video_feedback() -> Vec<RTCPFeedback> {
    [("goog-remb", ""), ("ccm", "fir"), ("nack", ""), ("nack", "pli")]
        .into_iter()
        .map(|(t, p)| RTCPFeedback { typ: t.into(), parameter: p.into() })
        .collect()
}

fn codec(
    mime: &str,
    clock_rate: u32,
    channels: u16,
    fmtp: &str,
    fb: Vec<RTCPFeedback>,
    pt: u8,
) -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: mime.into(),
            clock_rate,
            channels,
            sdp_fmtp_line: fmtp.into(),
            rtcp_feedback: fb,
        },
        payload_type: pt,
    }
}

/// Opus, 48 kHz stereo (as SDP announces it).
pub fn opus() -> RTCRtpCodec {
    RTCRtpCodec { mime_type: "audio/opus".into(), clock_rate: 48000, channels: 2, ..Default::default() }
}

/// An outgoing track `{stream}-{id}` of one encoding with a fixed SSRC.
/// The SSRC must be ours: the stack drops packets whose SSRC it did not
/// assign to the track, and rewrites nothing.
pub fn track_def(stream: &str, id: &str, kind: RtpCodecKind, ssrc: u32, codec: RTCRtpCodec) -> MediaStreamTrack {
    MediaStreamTrack::new(
        stream.to_owned(),
        format!("{stream}-{id}"),
        id.to_owned(),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
            codec,
            ..Default::default()
        }],
    )
}

/// Opus plus exactly one video codec (with its RTX), for one leg.
pub fn media_engine(video: VideoCodec) -> webrtc::error::Result<MediaEngine> {
    media_engine_for(true, Some(video))
}

/// Opus if `audio`, and at most one video codec (with its RTX): a kind
/// without a codec is refused in the answer (an audio-only leg).
pub fn media_engine_for(audio: bool, video: Option<VideoCodec>) -> webrtc::error::Result<MediaEngine> {
    let mut me = MediaEngine::default();
    if audio {
        me.register_codec(
            codec("audio/opus", 48000, 2, "minptime=10;useinbandfec=1", vec![], 111),
            RtpCodecKind::Audio,
        )?;
    }
    let rtx = |pt: u8, apt: u8| codec("video/rtx", 90000, 0, &format!("apt={apt}"), vec![], pt);
    match video {
        None => {}
        Some(VideoCodec::Vp8) => {
            me.register_codec(codec("video/VP8", 90000, 0, "", video_feedback(), 96), RtpCodecKind::Video)?;
            me.register_codec(rtx(97, 96), RtpCodecKind::Video)?;
        }
        Some(VideoCodec::H264) => {
            for (pt, rtx_pt, fmtp) in [
                (102, 103, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f"),
                (125, 107, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"),
                (108, 109, "level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f"),
            ] {
                me.register_codec(codec("video/H264", 90000, 0, fmtp, video_feedback(), pt), RtpCodecKind::Video)?;
                me.register_codec(rtx(rtx_pt, pt), RtpCodecKind::Video)?;
            }
        }
    }
    Ok(me)
}

/// The default interceptors (NACK both ways, RTCP reports, TWCC feedback)
/// plus one that hands keyframe requests to the application.
pub fn interceptors(me: &mut MediaEngine) -> webrtc::error::Result<Registry> {
    Ok(register_default_interceptors(Registry::new(), me)?.with(Slot::from(14_000), KeyframeRequests::default()))
}

/// Marks PLI and FIR for delivery to the application, one packet per
/// request so that each is routed by its own media SSRC. Other RTCP was
/// already consumed by the interceptors before this one.
#[derive(Default)]
pub struct KeyframeRequests {
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

pub fn is_keyframe_request(p: &dyn rtc::rtcp::Packet) -> bool {
    let any = p.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequests {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(pkts) = &msg.message.packet {
            for p in pkts.iter().filter(|p| is_keyframe_request(p.as_ref())) {
                let mut message = msg.message.clone();
                message.packet = Packet::Rtcp(vec![p.clone()]);
                message.add(Attribute::DeliverToApplication);
                self.read.push_back(TaggedPacket { now: msg.now, transport: msg.transport, message });
            }
            return Ok(());
        }
        self.read.push_back(msg);
        Ok(())
    }
    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }
    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }
    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl Interceptor for KeyframeRequests {
    fn bind_local_stream(&mut self, _: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _: &StreamInfo) {}
}

/// A signaling candidate as a peer connection takes it; `None` for the empty
/// end-of-candidates marker, which there is nothing to add for.
pub fn candidate_init(c: shared_proto::IceCandidate) -> Option<RTCIceCandidateInit> {
    if c.candidate.trim().is_empty() {
        return None;
    }
    Some(RTCIceCandidateInit {
        candidate: c.candidate,
        sdp_mid: c.sdp_mid,
        sdp_mline_index: c.sdp_mline_index,
        username_fragment: c.username_fragment,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_choice() {
        let head = "v=0\r\ns=-\r\nm=audio 9 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n";
        let vp8 = format!("{head}m=video 9 RTP/AVP 96 102\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:102 H264/90000\r\n");
        let h264 = format!("{head}m=video 9 RTP/AVP 102\r\na=rtpmap:102 H264/90000\r\n");
        let rejected = format!("{head}m=video 0 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n");
        assert_eq!(VideoCodec::choose([&vp8, &vp8]), Some(VideoCodec::Vp8));
        assert_eq!(VideoCodec::choose([&vp8, &h264]), Some(VideoCodec::H264));
        assert_eq!(VideoCodec::choose([&vp8, head]), None);
        assert_eq!(VideoCodec::choose([&vp8, &rejected]), None);
        assert_eq!(VideoCodec::choose(["a=rtpmap:96 VP8/90000", &h264]), None);
    }
}
