//! CI smoke run of the load generator: two calls for five seconds through a
//! real one2one-server; the generator must exit 0, which it does only when
//! every call carried video and audio both ways with at most 1 % loss. No
//! speed is checked.
//!
//! Media needs a non-loopback address: run through `scripts/netns-run`
//! (as `scripts/test` does), which exports ONE2ONE_TEST_IP.

use std::net::IpAddr;
use std::time::Duration;

use one2one_server::media::relay::RelayConfig;
use one2one_server::{ServerConfig, Transport};

fn media_ip() -> IpAddr {
    match std::env::var("ONE2ONE_TEST_IP") {
        Ok(ip) => ip.parse().expect("ONE2ONE_TEST_IP is not an IP address"),
        Err(_) => panic!(
            "the bench smoke test needs a private network namespace: run it through \
             `scripts/netns-run cargo nextest run` (needs root and iproute2), as `scripts/test` does"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_calls_carry_media_both_ways() {
    let ip = media_ip();
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let config =
        ServerConfig { relay: RelayConfig { media_ips: vec![ip], ..Default::default() }, ..Default::default() };
    let server = one2one_server::start(listener, Transport::Http, config).await.unwrap();
    let url = format!("ws://{}/one2one", server.addr);
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_one2one-bench"))
        .args(["--target", "one2one", "--url", &url, "--calls", "2", "--duration", "5", "--warmup", "1"])
        .args(["--media-ip", &ip.to_string(), "--frames", "60", "--json"])
        .kill_on_drop(true)
        .output();
    // Encoding, set-up, 1 s warm-up and 5 s of media: well under a minute.
    let out = tokio::time::timeout(Duration::from_secs(90), child)
        .await
        .expect("the load generator did not finish within 90 s")
        .expect("running the load generator");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "load generator failed ({}):\n{stdout}\n{stderr}", out.status);
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("a JSON report");
    assert_eq!(report["calls_ok"], 2, "{report}");
    assert_eq!(report["media_ok"], true, "{report}");
    for call in report["per_call"].as_array().unwrap() {
        for s in call["streams"].as_array().unwrap() {
            assert!(s["received"].as_u64().unwrap() > 0, "{s}");
        }
    }
}
