//! The data plane's demultiplexer against hostile input: random bytes,
//! truncated STUN, STUN for an unknown ufrag, STUN for a known ufrag with
//! bad integrity, from many addresses. Nothing panics and no state is
//! created; the worker keeps serving.

mod common;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;

use common::DEADLINE;
use one2one_media::peer::{Peer, PeerOptions};
use one2one_server::media::plane::Plane;
use one2one_server::media::plane::demux::{Demux, stun_local_ufrag};
use proptest::prelude::*;
use tokio::sync::mpsc;

/// A STUN binding request with a USERNAME and garbage after it (no valid
/// MESSAGE-INTEGRITY).
fn binding_request(username: &str, tail: &[u8]) -> Vec<u8> {
    let mut attrs = Vec::new();
    attrs.extend_from_slice(&0x0006u16.to_be_bytes());
    attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
    attrs.extend_from_slice(username.as_bytes());
    while attrs.len() % 4 != 0 {
        attrs.push(0);
    }
    // MESSAGE-INTEGRITY with 20 bytes of garbage.
    attrs.extend_from_slice(&0x0008u16.to_be_bytes());
    attrs.extend_from_slice(&20u16.to_be_bytes());
    attrs.extend_from_slice(&[0xAB; 20]);
    attrs.extend_from_slice(tail);
    let mut m = vec![0x00, 0x01];
    m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    m.extend_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
    m.extend_from_slice(&[9; 12]);
    m.extend_from_slice(&attrs);
    m
}

/// Waits, with a deadline, until the worker has received `sent` datagrams.
async fn seen_all(plane: &Plane, sent: u64) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while plane.stats().received.load(Ordering::SeqCst) < sent {
        assert!(tokio::time::Instant::now() < deadline, "the worker lost datagrams of the flood");
        plane.cpu_time().await;
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

fn addr(ip: u32, port: u16) -> SocketAddr {
    SocketAddr::new(Ipv4Addr::from(ip).into(), port)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_datagrams_never_panic_nor_create_state(
        data in proptest::collection::vec(any::<u8>(), 0..1500),
        ip in any::<u32>(),
        port in any::<u16>(),
        cut in any::<usize>(),
        user in "[a-zA-Z0-9:+/]{0,40}",
    ) {
        let mut d = Demux::new();
        assert!(d.add_leg(7, "knownufrag"));
        let before = d.sizes();
        let from = addr(ip, port);
        let _ = stun_local_ufrag(&data);
        prop_assert_eq!(d.route(from, &data), None);
        let stun = binding_request(&user, &data);
        let _ = d.route(from, &stun);
        let truncated = &stun[..cut % (stun.len() + 1)];
        let _ = d.route(from, truncated);
        // Only the known ufrag routes, and nothing is learned by routing.
        let known = binding_request("knownufrag:x", &[]);
        let k = cut % (known.len() + 1);
        let r = d.route(from, &known[..k]);
        prop_assert_eq!(r, if k < known.len() { None } else { Some(7) });
        prop_assert_eq!(d.sizes(), before);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_junk_at_the_worker_creates_nothing_and_the_worker_keeps_serving() {
    common::init_tracing();
    let ip: std::net::IpAddr = Ipv4Addr::LOCALHOST.into();
    let (plane, _events) = Plane::start(SocketAddr::new(ip, 0)).expect("worker");
    let (tx, _rx) = mpsc::unbounded_channel();
    let peer = Peer::new(&PeerOptions { bind_ips: vec![ip], ..Default::default() }, tx).await.expect("peer");
    let offer = peer.create_offer().await.expect("offer");
    let (leg, answer) = tokio::time::timeout(DEADLINE, plane.create_leg(&offer)).await.unwrap().expect("answer");
    let ufrag = answer.lines().find_map(|l| l.strip_prefix("a=ice-ufrag:")).expect("ufrag").trim().to_owned();

    let target = plane.local_addr();
    let senders: Vec<UdpSocket> = (0..16).map(|_| UdpSocket::bind((ip, 0)).unwrap()).collect();
    let mut rng = proptest::test_runner::TestRng::deterministic_rng(proptest::test_runner::RngAlgorithm::ChaCha);
    let mut sent = 0u64;
    // Bad-integrity STUN for the known ufrag reaches the leg (which
    // refuses it); everything else is dropped by the demultiplexer.
    let mut to_leg = 0u64;
    for i in 0..3000usize {
        let s = &senders[i % senders.len()];
        let n = (rng.next_u32() % 1400) as usize;
        let mut junk = vec![0u8; n];
        rng.fill_bytes(&mut junk);
        let dgram = match i % 5 {
            0 => junk,
            1 => {
                to_leg += 1;
                binding_request(&format!("{ufrag}:remote"), &junk[..n.min(40)])
            }
            2 => binding_request("unknown:remote", &junk[..n.min(40)]),
            3 => {
                let m = binding_request(&format!("{ufrag}:remote"), &[]);
                m[..(n % m.len())].to_vec()
            }
            _ => {
                // Looks like DTLS or SRTP from an unknown address.
                junk.insert(0, if i % 2 == 0 { 22 } else { 0x80 });
                junk
            }
        };
        s.send_to(&dgram, target).unwrap();
        sent += 1;
        // Pace the flood to the socket's buffer: at most 16 datagrams in
        // flight, so that none is lost before the worker sees it. (Loopback
        // datagrams sent from different CPUs can overtake each other, so a
        // command's round trip alone is no barrier: wait for the counter.)
        if sent.is_multiple_of(16) {
            seen_all(&plane, sent).await;
        }
    }
    seen_all(&plane, sent).await;
    let st = plane.stats();
    println!(
        "flood: {sent} sent, {} received, {} dropped by the demultiplexer",
        st.received.load(Ordering::SeqCst),
        st.dropped.load(Ordering::SeqCst)
    );
    assert_eq!(st.received.load(Ordering::SeqCst), sent, "the worker did not see the whole flood");
    assert_eq!(st.dropped.load(Ordering::SeqCst), sent - to_leg, "junk reached a leg");
    assert_eq!(st.addrs.load(Ordering::SeqCst), 0, "junk taught the demultiplexer an address");
    assert_eq!(st.panics.load(Ordering::SeqCst), 0);
    assert_eq!(plane.leg_count(), 1);
    // Still serving: another leg answers, and release frees both.
    let (leg2, _) = tokio::time::timeout(DEADLINE, plane.create_leg(&offer)).await.unwrap().expect("second answer");
    plane.release(leg).unwrap();
    plane.release(leg2).unwrap();
    plane.cpu_time().await;
    assert_eq!(plane.leg_count(), 0);
    peer.close().await;
}
