//! The real `one2one-server` binary refuses settings that would start a
//! broken server (exit 2, the message naming the flag) and warns loudly
//! about those that can run, before it serves anything.

use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_one2one-server");

/// Runs the server with `args` and a free port; returns its exit code and
/// stderr once it exits, or `None` (and kills it) once it is listening.
fn start(args: &[&str]) -> (Option<i32>, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = Command::new(BIN)
        .args(["--listen", &listen])
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn one2one-server");
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        while err.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            if tx.send(std::mem::take(&mut line)).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut text = String::new();
    loop {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(50)) {
            text.push_str(&l);
            if l.contains("listening") {
                let _ = child.kill();
                let _ = child.wait();
                return (None, text);
            }
        }
        if let Some(s) = child.try_wait().unwrap() {
            while let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
                text.push_str(&l);
            }
            return (s.code(), text);
        }
        assert!(Instant::now() < deadline, "the server neither started nor exited: {text}");
    }
}

fn refused(args: &[&str], says: &str) {
    let (code, err) = start(args);
    assert_eq!(code, Some(2), "{args:?} should be refused: {err}");
    assert!(err.contains(says), "{args:?}: {err}");
}

#[test]
fn settings_that_break_every_call_are_refused_at_start() {
    refused(&["--ice-server", "turn:turn.example.org:3478"], "a TURN server needs --ice-username and --ice-credential");
    refused(&["--ice-server", "notaurl"], "--ice-server \"notaurl\": not a STUN or TURN URL");
    refused(&["--ring-timeout", "0"], "--ring-timeout");
    refused(&["--max-message-bytes", "0"], "--max-message-bytes");
    refused(&["--rate-limit", "0"], "--rate-limit");
    refused(&["--http", "--tls-cert", "/x.pem", "--tls-key", "/x.key"], "--http");
    refused(&["--web-root", "/nonexistent"], "--web-root /nonexistent: not a folder");
    refused(&["--udp-port-range", "40000-40000"], "a call needs two ports");
    // And these start.
    assert_eq!(start(&["--http", "--ice-server", "stun:stun.example.org"]).0, None);
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("one2one-certs-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl is missing: apt-get install openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A v1 certificate is refused with what is wrong with it (not "key does
/// not match"); an expired one starts with a loud warning.
#[test]
fn certificates_are_checked_at_start() {
    let d = tmp("v1");
    openssl(
        &d,
        &[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "k.pem",
            "-subj",
            "/CN=localhost",
            "-out",
            "r.csr",
        ],
    );
    openssl(&d, &["x509", "-req", "-in", "r.csr", "-signkey", "k.pem", "-days", "30", "-out", "c.pem"]);
    let (cert, key) = (d.join("c.pem"), d.join("k.pem"));
    refused(&["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()], "an X.509 v1 certificate");
    // A key that is not the certificate's is refused naming both flags.
    openssl(
        &d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "k3.pem",
            "-subj",
            "/CN=localhost",
            "-days",
            "30",
            "-out",
            "c3.pem",
        ],
    );
    openssl(&d, &["genrsa", "-out", "other.pem", "2048"]);
    let (c3, other) = (d.join("c3.pem"), d.join("other.pem"));
    refused(&["--tls-cert", c3.to_str().unwrap(), "--tls-key", other.to_str().unwrap()], "--tls-key");
    refused(&["--tls-cert", c3.to_str().unwrap(), "--tls-key", "/nonexistent.pem"], "--tls-key /nonexistent.pem");

    let d = tmp("expired");
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(d.join("c.pem"), cert.pem()).unwrap();
    std::fs::write(d.join("k.pem"), key.serialize_pem()).unwrap();
    let (code, err) =
        start(&["--tls-cert", d.join("c.pem").to_str().unwrap(), "--tls-key", d.join("k.pem").to_str().unwrap()]);
    assert_eq!(code, None, "an expired certificate still starts: {err}");
    assert!(err.contains("WARNING") && err.contains("EXPIRED on"), "{err}");
    let mut s = String::new();
    let _ = std::io::Cursor::new(err).read_to_string(&mut s);
}

/// `--help` tells the operator what the server offers and what it takes.
#[test]
fn help_names_endpoints_units_and_signals() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for s in [
        "/healthz",
        "/metrics",
        "RUST_LOG",
        "SIGTERM",
        "SIGHUP",
        "bursts of",
        "--ring-timeout <SECS>",
        "--max-message-bytes <BYTES>",
        "--rate-limit <PER_SEC>",
        "hands this static username and credential to anyone",
    ] {
        assert!(help.contains(s), "--help lacks {s:?}:\n{help}");
    }
    assert!(!help.contains("webrtc 0.21"), "no library versions in --help:\n{help}");
}

/// Issue 14 item 14: the self-signed certificate covers the listen address.
#[test]
fn the_self_signed_certificate_covers_the_listen_address() {
    let port = std::net::TcpListener::bind("127.0.0.2:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.2:{port}");
    let mut child = Command::new(BIN)
        .args(["--listen", &addr])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn one2one-server");
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut line = String::new();
    while !line.contains("listening") {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "the server exited");
        assert!(Instant::now() < deadline, "the server never listened");
    }
    let shown = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect {addr} </dev/null 2>/dev/null | openssl x509 -noout -ext subjectAltName"
        ))
        .output()
        .expect("openssl is missing: apt-get install openssl");
    let _ = child.kill();
    let _ = child.wait();
    let san = String::from_utf8_lossy(&shown.stdout);
    assert!(san.contains("IP Address:127.0.0.2"), "subjectAltName: {san}");
    assert!(san.contains("DNS:localhost"), "subjectAltName: {san}");
}

#[test]
fn kurento_settings_are_checked() {
    refused(&["--http", "--media", "kurento"], "--media kurento needs at least one --kms-uri");
    refused(&["--http", "--kms-uri", "ws://127.0.0.1:8888/kurento"], "--kms-uri needs --media kurento");
    refused(
        &["--http", "--media", "kurento", "--kms-uri", "http://kms:8888/kurento"],
        "must start with ws:// or wss://",
    );
    refused(&["--http", "--media", "kurento", "--kms-uri", "ws:///kurento"], "no host");
    refused(&["--http", "--media", "kurento", "--kms-uri", "ws://k/kurento", "--kms-timeout", "0.1"], "--kms-timeout");
    refused(&["--http", "--media", "fancy"], "--media");
}
