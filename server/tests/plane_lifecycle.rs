//! Legs on a data plane worker come and go: release frees them, a bad
//! offer leaves nothing behind, and a panic inside one leg's state machine
//! ends that leg only (reported as Failed) while the worker keeps serving.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;

use common::DEADLINE;
use one2one_media::peer::{Peer, PeerOptions};
use one2one_server::media::plane::{Plane, PlaneError, PlaneEvent, PlaneEventKind};
use tokio::sync::mpsc;

async fn offer() -> (Peer, String) {
    let (tx, _rx) = mpsc::unbounded_channel();
    let ip = Ipv4Addr::LOCALHOST.into();
    let peer = Peer::new(&PeerOptions { bind_ips: vec![ip], ..Default::default() }, tx).await.expect("peer");
    let sdp = peer.create_offer().await.expect("offer");
    (peer, sdp)
}

fn worker() -> (Plane, mpsc::UnboundedReceiver<PlaneEvent>) {
    common::init_tracing();
    Plane::start(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0)).expect("worker")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_frees_every_leg() {
    let (plane, mut events) = worker();
    let (_peer, sdp) = offer().await;
    let mut legs = Vec::new();
    for _ in 0..20 {
        let (leg, answer) = tokio::time::timeout(DEADLINE, plane.create_leg(&sdp)).await.unwrap().expect("answer");
        assert!(answer.contains("a=ice-lite"), "not an ICE-lite answer:\n{answer}");
        assert!(answer.contains(&format!(" {} typ host", plane.local_addr().port())), "no host candidate:\n{answer}");
        legs.push(leg);
    }
    assert_eq!(plane.leg_count(), 20);
    // Each leg announced the worker's socket as its candidate.
    for leg in &legs {
        let ev = tokio::time::timeout(DEADLINE, events.recv()).await.unwrap().unwrap();
        assert_eq!(ev.leg, *leg);
        assert!(matches!(&ev.kind, PlaneEventKind::Candidate(c) if c.contains("typ host")), "{ev:?}");
    }
    plane.connect(legs[0], legs[1]).unwrap();
    plane.connect(legs[1], legs[0]).unwrap();
    for leg in legs {
        plane.release(leg).unwrap();
    }
    plane.cpu_time().await;
    assert_eq!(plane.leg_count(), 0);
    assert_eq!(plane.stats().addrs.load(Ordering::SeqCst), 0);
    // Releasing twice, or a leg that never was, is harmless.
    plane.release(1).unwrap();
    plane.release(999).unwrap();
    plane.cpu_time().await;
    assert_eq!(plane.leg_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_offer_is_refused_and_leaves_nothing() {
    let (plane, _events) = worker();
    for bad in [
        "",
        "v=0\r\n",
        "this is not sdp",
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n",
    ] {
        let r = tokio::time::timeout(DEADLINE, plane.create_leg(bad)).await.unwrap();
        assert!(matches!(r, Err(PlaneError::BadOffer(_)) | Err(PlaneError::Internal(_))), "{bad:?}: {r:?}");
    }
    assert_eq!(plane.leg_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_one_leg_ends_that_leg_only() {
    let (plane, mut events) = worker();
    let (_peer, sdp) = offer().await;
    let (a, _) = plane.create_leg(&sdp).await.expect("a");
    let (b, _) = plane.create_leg(&sdp).await.expect("b");
    plane.connect(a, b).unwrap();
    plane.connect(b, a).unwrap();
    plane.inject_panic(a).unwrap();
    // The next input on `a` panics; a remote candidate is one.
    plane.add_remote_candidate(a, "candidate:1 1 udp 2113929471 127.0.0.1 9 typ host").unwrap();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let ev = tokio::time::timeout_at(deadline, events.recv()).await.expect("Failed in time").unwrap();
        if ev.kind == PlaneEventKind::Failed {
            assert_eq!(ev.leg, a);
            break;
        }
    }
    plane.cpu_time().await;
    assert_eq!(plane.leg_count(), 1);
    assert_eq!(plane.stats().panics.load(Ordering::SeqCst), 1);
    // The worker still serves: b takes input, a new leg answers.
    plane.add_remote_candidate(b, "candidate:1 1 udp 2113929471 127.0.0.1 9 typ host").unwrap();
    let (c, _) = tokio::time::timeout(DEADLINE, plane.create_leg(&sdp)).await.unwrap().expect("c");
    assert_eq!(plane.leg_count(), 2);
    plane.release(b).unwrap();
    plane.release(c).unwrap();
    plane.cpu_time().await;
    assert_eq!(plane.leg_count(), 0);
}
