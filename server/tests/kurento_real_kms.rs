//! `--media kurento` against a real KMS-protocol endpoint: another
//! `one2one-server` process with `--kms-listen`, whose WebRtcEndpoints are
//! relay legs that answer real offers. Killed with SIGKILL mid-call, and
//! restarted (a new process that never knew the session), each tells both
//! users within 5 s; a hang-up releases everything on it.
//!
//! Media tests: run through `scripts/netns-run`.

mod common;
mod kurento_support;

use std::time::Instant;

use kurento_support::*;

async fn setup() -> (Proc, u16, u16, one2one_server::Server) {
    let (http, kms) = (free_port(), free_port());
    let p = kms_listen_process(http, kms, media_ip());
    let uri = format!("ws://127.0.0.1:{kms}/kurento");
    let server = start_server(kurento(std::slice::from_ref(&uri))).await;
    kms_up(&server, &uri).await;
    (p, http, kms, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_on_a_kms_listen_server_is_released_after_hang_up() {
    let (_kms, http, _, server) = setup().await;
    let (_pa, offer_a) = real_offer(media_ip()).await;
    let (_pb, offer_b) = real_offer(media_ip()).await;
    let (mut a, mut b) = established_real_call(&server, "alice", "bob", (&offer_a, &offer_b)).await;
    let metrics = |m: &str, name: &str| series(m, name);
    let kms_metrics = || async { reqwest_like(http).await };
    let m = kms_metrics().await;
    assert_eq!((metrics(&m, "one2one_kms_pipelines"), metrics(&m, "one2one_kms_endpoints")), (Some(1), Some(2)), "{m}");
    a.send(r#"{"id":"stop"}"#).await;
    b.expect(&stopped("remote user hanged out")).await;
    let end = Instant::now() + DEADLINE;
    loop {
        let m = kms_metrics().await;
        if metrics(&m, "one2one_kms_endpoints") == Some(0) && metrics(&m, "one2one_kms_pipelines") == Some(0) {
            break;
        }
        assert!(Instant::now() < end, "the pipeline was not released:\n{m}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    server.shutdown().await;
}

/// `/metrics` of the `--kms-listen` process.
async fn reqwest_like(http_port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", http_port)).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut buf)).await.expect("metrics in time").unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kms_listen_server_killed_mid_call_ends_it_for_both() {
    let (kms, _, _, server) = setup().await;
    let (_pa, offer_a) = real_offer(media_ip()).await;
    let (_pb, offer_b) = real_offer(media_ip()).await;
    let (mut a, mut b) = established_real_call(&server, "alice", "bob", (&offer_a, &offer_b)).await;
    kms.signal("-KILL");
    let killed = Instant::now();
    let reason = "media server lost: the connection to it broke and did not come back within 2 s";
    b.expect_by(&stopped(reason), killed + TOLD_WITHIN).await;
    a.expect_by(&stopped(reason), killed + TOLD_WITHIN).await;
    eprintln!("killed -9: both users told after {} ms", killed.elapsed().as_millis());
    let (status, body) = http_get(&server, "/healthz").await;
    assert_eq!((status, body.trim()), (503, "degraded: no Kurento Media Server reachable"));
    drop(kms);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_kms_listen_server_has_forgotten_the_session() {
    let (kms, http, kms_port, server) = setup().await;
    let (_pa, offer_a) = real_offer(media_ip()).await;
    let (_pb, offer_b) = real_offer(media_ip()).await;
    let (mut a, mut b) = established_real_call(&server, "alice", "bob", (&offer_a, &offer_b)).await;
    kms.signal("-KILL");
    let killed = Instant::now();
    drop(kms);
    let _again = kms_listen_process(http, kms_port, media_ip());
    let restarted = killed.elapsed();
    eprintln!("restarted after {} ms", restarted.as_millis());
    // A restart slower than the grace is a connection that did not come back.
    let reason = if restarted.as_millis() < 1800 {
        "media server lost: it restarted and no longer knows this call"
    } else {
        "media server lost: the connection to it broke and did not come back within 2 s"
    };
    b.expect_by(&stopped(reason), killed + TOLD_WITHIN).await;
    a.expect_by(&stopped(reason), killed + TOLD_WITHIN).await;
    eprintln!("restarted: both users told after {} ms", killed.elapsed().as_millis());
    // The new process takes new calls, on a new session.
    kms_up(&server, &format!("ws://127.0.0.1:{kms_port}/kurento")).await;
    let (_pc, offer_c) = real_offer(media_ip()).await;
    let (_pd, offer_d) = real_offer(media_ip()).await;
    let (mut c, mut d) = established_real_call(&server, "carol", "dave", (&offer_c, &offer_d)).await;
    c.send(r#"{"id":"stop"}"#).await;
    d.expect(&stopped("remote user hanged out")).await;
    server.shutdown().await;
}
