//! Issue 14, item 4: a caller or callee without a camera (an offer with an
//! audio m-line only, or video it only receives) makes a working call:
//! audio both ways, video where one side sends and the other takes it,
//! and the call counted as established. Offers that cannot be carried at
//! all fail with a reason.

mod common;
mod relay_support;

use common::*;
use relay_support::*;

/// Waits until `one2one_calls_established_total` reaches `want`.
async fn established(server: &one2one_server::Server, want: u64) -> u64 {
    let m = metrics_when(server, "one2one_calls_established_total", |v| v >= want).await;
    metric(&m, "one2one_calls_established_total")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_with_only_a_microphone_gets_an_audio_call() {
    let server = start_server(media_config()).await;
    let mut alice = Ws::user(&server, "alice").await;
    let mut bob = MediaUser::new(&server, "bob").await;
    let (mut peer, ()) =
        tokio::join!(TestPeer::call(Spec::MIC_ONLY, &mut alice, media_ip(), "bob"), bob.answer("alice"));

    let (at_alice, at_bob) = talk(&mut peer, &mut alice, &mut bob, Source { rgb: [200, 30, 30], tone_hz: 440.0 }).await;
    assert!(at_alice.connected, "alice never connected: {at_alice:?}");
    assert!(at_alice.audio_packets >= 25, "alice heard only {} packets", at_alice.audio_packets);
    assert_eq!(at_alice.video_packets, 0, "alice offered no video");
    assert!(at_bob.audio_packets >= 25, "bob heard only {} packets", at_bob.audio_packets);
    assert_eq!(at_bob.frames, 0, "alice has no camera");
    assert_eq!(established(&server, 1).await, 1, "the audio-only call was not counted as established");

    bob.hang_up().await;
    peer.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callee_without_video_gets_the_call_and_the_callers_video_is_not_forwarded() {
    let server = start_server(media_config()).await;
    let mut alice = MediaUser::new(&server, "alice").await;
    let mut bob = Ws::user(&server, "bob").await;
    let ((), mut peer) =
        tokio::join!(alice.call("bob"), TestPeer::answer(Spec::MIC_ONLY, &mut bob, media_ip(), "alice"));

    let (at_bob, at_alice) = talk(&mut peer, &mut bob, &mut alice, Source { rgb: [200, 30, 30], tone_hz: 440.0 }).await;
    assert!(at_alice.audio_packets >= 25, "alice heard only {} packets", at_alice.audio_packets);
    assert_eq!(at_alice.frames, 0, "bob has no camera");
    assert!(at_bob.audio_packets >= 25, "bob heard only {} packets", at_bob.audio_packets);
    assert_eq!(at_bob.video_packets, 0, "bob offered no video, yet video came");
    assert_eq!(established(&server, 1).await, 1);

    alice.hang_up().await;
    peer.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_that_only_receives_video_sees_the_callees_camera() {
    let server = start_server(media_config()).await;
    let mut alice = Ws::user(&server, "alice").await;
    let mut bob = MediaUser::new(&server, "bob").await;
    let (mut peer, ()) =
        tokio::join!(TestPeer::call(Spec::WATCHER, &mut alice, media_ip(), "bob"), bob.answer("alice"));

    let (at_alice, at_bob) = talk(&mut peer, &mut alice, &mut bob, Source { rgb: [40, 60, 220], tone_hz: 660.0 }).await;
    assert!(at_alice.video_packets >= 20, "alice got only {} video packets", at_alice.video_packets);
    assert!(at_alice.audio_packets >= 25, "alice heard only {} packets", at_alice.audio_packets);
    assert!(at_bob.audio_packets >= 25, "bob heard only {} packets", at_bob.audio_packets);
    assert_eq!(at_bob.frames, 0, "alice sends no video");
    assert_eq!(established(&server, 1).await, 1);

    bob.hang_up().await;
    peer.close().await;
    server.shutdown().await;
}

/// The relay alone: offers it cannot carry fail the call with a reason
/// (the core refuses them before ringing with
/// `one2one_media::sdp_check::check_offer`; this is the backstop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_the_relay_cannot_carry_fail_with_a_reason() {
    use one2one_server::media::relay::{RelayBackend, RelayConfig};
    use one2one_server::media::{CallId, MediaBackend, MediaCmd, MediaEvent};

    let (_peer, good) = real_offer().await;
    let video_only = good
        .split_inclusive('\n')
        .scan(false, |in_audio, l| {
            if l.starts_with("m=") {
                *in_audio = l.starts_with("m=audio");
            }
            Some(if *in_audio { "" } else { l })
        })
        .collect::<String>();
    let audio_only = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=rtpmap:111 opus/48000/2\r\n";
    let cases = [
        ("not sdp", good.clone(), "hello".to_owned(), "the callee's offer: the offer is not an SDP"),
        (
            "no codec",
            "v=0\r\ns=-\r\nm=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n".into(),
            good.clone(),
            "no common codec",
        ),
        ("disjoint", audio_only.into(), video_only, "no common codec"),
    ];
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let relay = RelayBackend::new(RelayConfig::default(), tx, Default::default());
    for (n, (what, caller_offer, callee_offer, want)) in cases.into_iter().enumerate() {
        let call = CallId(n as u64 + 1);
        relay.submit(MediaCmd::Start { call, caller_offer, callee_offer });
        let ev = tokio::time::timeout(DEADLINE, rx.recv()).await.expect("an event").expect("open");
        match ev {
            MediaEvent::Failed { call: c, error } => {
                let reason = error.to_string();
                assert_eq!(c, call);
                assert!(reason.contains(want), "{what}: {reason}");
            }
            other => panic!("{what}: {other:?}"),
        }
        relay.submit(MediaCmd::Release { call });
    }
    relay.shutdown().await;
}
