//! Two real WebRTC peers call each other through the server's embedded
//! relay: each sends a solid colour (VP8) and a tone (Opus), and each
//! decodes what the other sent.

mod common;

use std::time::Duration;

use common::*;
use one2one_media::analysis::dominant_frequency;
use one2one_media::audio::SAMPLE_RATE;
use one2one_media::colour_distance;

const RED: [u8; 3] = [220, 40, 40];
const BLUE: [u8; 3] = [40, 60, 220];

fn enough(r: &Received) -> bool {
    r.frames >= 45 && r.pcm.len() >= SAMPLE_RATE as usize * 3 / 2
}

fn check(who: &str, got: &Received, want: Source) {
    let rgb = got.last_rgb.unwrap_or_else(|| panic!("{who} decoded no video"));
    assert!(got.frames >= 45, "{who} decoded only {} frames", got.frames);
    assert_eq!(got.size, Some((W, H)), "{who}: frame size");
    assert!(colour_distance(rgb, want.rgb) <= 24, "{who} saw colour {rgb:?}, the other side sent {:?}", want.rgb);
    let f = dominant_frequency(tail(&got.pcm, 1.0), SAMPLE_RATE).expect("enough audio");
    let err = (f - want.tone_hz).abs() / want.tone_hz;
    assert!(err < 0.02, "{who} heard {f:.1} Hz, the other side sent {} Hz", want.tone_hz);
    println!("{who}: {} frames, colour {rgb:?}, {} audio packets, tone {f:.1} Hz", got.frames, got.audio_packets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colour_and_tone_cross_the_relay_both_ways() {
    let server = start_server(media_config()).await;
    let mut alice = MediaUser::new(&server, "alice").await;
    let mut bob = MediaUser::new(&server, "bob").await;
    tokio::join!(alice.call("bob"), bob.answer("alice"));

    let a_src = Source { rgb: RED, tone_hz: 440.0 };
    let b_src = Source { rgb: BLUE, tone_hz: 660.0 };
    let within = Duration::from_secs(20);
    let done = Done::of(2);
    let (at_alice, at_bob) =
        tokio::join!(alice.exchange(a_src, within, &done, enough), bob.exchange(b_src, within, &done, enough));
    check("alice", &at_alice, b_src);
    check("bob", &at_bob, a_src);

    let m = server.metrics.render();
    assert!(m.contains("one2one_active_calls 1"), "{m}");
    let relayed: u64 =
        m.lines().find_map(|l| l.strip_prefix("one2one_relayed_packets_total ")).and_then(|v| v.parse().ok()).unwrap();
    assert!(relayed > 200, "relayed {relayed} packets");

    alice.hang_up().await;
    bob.ws.expect(r#"{"id":"stopCommunication","message":"remote user hanged out"}"#).await;
    bob.drop_peer().await;
    server.shutdown().await;
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

/// UDP sockets this process holds (inodes of /proc/self/fd that are in
/// /proc/self/net/udp{,6}).
fn udp_sockets() -> usize {
    let mut inodes = std::collections::HashSet::new();
    for table in ["/proc/self/net/udp", "/proc/self/net/udp6"] {
        if let Ok(t) = std::fs::read_to_string(table) {
            for line in t.lines().skip(1) {
                if let Some(inode) = line.split_whitespace().nth(9) {
                    inodes.insert(format!("socket:[{inode}]"));
                }
            }
        }
    }
    std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter(|l| inodes.contains(&l.to_string_lossy().to_string()))
                .count()
        })
        .unwrap_or(0)
}

async fn one_call(server: &one2one_server::Server, alice: &mut MediaUser, bob: &mut MediaUser) {
    tokio::join!(alice.call("bob"), bob.answer("alice"));
    let src = Source { rgb: RED, tone_hz: 440.0 };
    let some = |r: &Received| r.frames >= 3 && r.audio_packets >= 5;
    let done = Done::of(2);
    let (a, b) = tokio::join!(
        alice.exchange(src, Duration::from_secs(15), &done, some),
        bob.exchange(src, Duration::from_secs(15), &done, some)
    );
    assert!(some(&a) && some(&b), "media did not flow: alice {a:?} bob {b:?}");
    alice.hang_up().await;
    bob.ws.expect(r#"{"id":"stopCommunication","message":"remote user hanged out"}"#).await;
    bob.drop_peer().await;
    let _ = server;
}

/// Waits until `f()` returns `want` or the deadline passes; returns the last value.
async fn settle(want: usize, f: impl Fn() -> usize) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let v = f();
        if v == want || tokio::time::Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_calls_leave_no_sockets_behind() {
    let server = start_server(media_config()).await;
    let mut alice = MediaUser::new(&server, "alice").await;
    let mut bob = MediaUser::new(&server, "bob").await;
    // One call first, so that lazily created runtime resources exist.
    one_call(&server, &mut alice, &mut bob).await;
    let udp_base = settle(0, udp_sockets).await;
    assert_eq!(udp_base, 0, "UDP sockets still open after the first call");
    let fd_base = open_fds();
    for _ in 0..20 {
        one_call(&server, &mut alice, &mut bob).await;
    }
    assert_eq!(settle(0, udp_sockets).await, 0, "UDP sockets left open after 20 calls");
    let fds = settle(fd_base, open_fds).await;
    assert_eq!(fds, fd_base, "open file descriptors: {fd_base} before, {fds} after 20 calls");
    println!("after 20 calls: {fds} fds (baseline {fd_base}), 0 UDP sockets");
    server.shutdown().await;
}
