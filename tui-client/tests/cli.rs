//! The real `one2one` binary against a real server: calls between two
//! headless clients through the embedded relay, and every documented
//! outcome with its exit code.

use std::io::BufReader;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use one2one_media::analysis::dominant_frequency;
use one2one_media::files::{Y4mReader, read_wav};
use one2one_media::pattern;

mod common;

use common::{BIN, Pulse, TestServer, spawn, spawn_env, tmpdir};

/// The last frames of a recording show the test pattern with the right bars.
fn check_video(path: &Path, who: &str) -> usize {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{who}: {}: {e}", path.display()));
    let mut r = Y4mReader::open(BufReader::new(f)).unwrap();
    let (mut frames, mut good) = (0, 0);
    while let Some(frame) = r.next_frame().unwrap() {
        frames += 1;
        if let Some(info) = pattern::decode(&frame)
            && pattern::bars_match(&frame, &info, 48) > 0.8
        {
            good += 1;
        }
    }
    assert!(frames >= 30, "{who}: only {frames} frames recorded");
    assert!(good * 10 >= frames * 8, "{who}: only {good} of {frames} frames show the test pattern");
    frames
}

fn check_tone(path: &Path, hz: f32, who: &str) {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{who}: {}: {e}", path.display()));
    let (rate, _, pcm) = read_wav(BufReader::new(f)).unwrap();
    let got = dominant_frequency(&pcm[pcm.len().saturating_sub(rate as usize)..], rate).expect("audio");
    assert!((got - hz).abs() / hz < 0.02, "{who} recorded {got:.1} Hz, expected {hz} Hz");
}

#[test]
fn cli_to_cli_through_the_relay() {
    let server = TestServer::start();
    let dir = tmpdir("cli2cli");
    let carol_rec = dir.join("carol");
    let erin_rec = dir.join("erin");
    let mut carol = spawn(
        &server.url,
        &[
            "register",
            "carol",
            "--auto-answer",
            "accept",
            "--audio",
            "tone:440",
            "--record-remote",
            carol_rec.to_str().unwrap(),
        ],
    );
    carol.wait_event("registered", Duration::from_secs(10));
    let mut erin = spawn(
        &server.url,
        &[
            "call",
            "carol",
            "--as",
            "erin",
            "--hangup-after",
            "5",
            "--audio",
            "tone:660",
            "--record-remote",
            erin_rec.to_str().unwrap(),
        ],
    );
    erin.wait_event("call_started", Duration::from_secs(15));
    carol.wait_event("call_started", Duration::from_secs(15));
    let ended = erin.wait_event("call_ended", Duration::from_secs(20));
    assert_eq!(ended["reason"], "hung_up");
    assert_eq!(erin.wait_exit(Duration::from_secs(10)), 0);
    let ended = carol.wait_event("call_ended", Duration::from_secs(10));
    assert_eq!(ended["reason"], "remote_hung_up");
    carol.interrupt();
    assert_eq!(carol.wait_exit(Duration::from_secs(10)), 0);

    let erin_frames = check_video(&erin_rec.with_extension("y4m"), "erin");
    let carol_frames = check_video(&carol_rec.with_extension("y4m"), "carol");
    check_tone(&erin_rec.with_extension("wav"), 440.0, "erin");
    check_tone(&carol_rec.with_extension("wav"), 660.0, "carol");
    let latency: Vec<f64> = erin.seen.iter().filter_map(|v| v["stats"]["glass_to_glass_ms"].as_f64()).collect();
    assert!(!latency.is_empty(), "erin reported no glass-to-glass latency: {:?}", erin.seen);
    println!("erin recorded {erin_frames} frames, carol {carol_frames}; glass-to-glass {latency:?} ms");
}

#[test]
fn outcomes_have_their_exit_codes() {
    let server = TestServer::start();
    let mut dave = spawn(&server.url, &["register", "dave", "--auto-answer", "reject"]);
    dave.wait_event("registered", Duration::from_secs(10));

    // Unknown user.
    let mut c = spawn(&server.url, &["call", "nobody", "--as", "u1"]);
    assert_eq!(c.wait_exit(Duration::from_secs(15)), 6);
    assert!(c.seen.iter().any(|v| v["event"] == "call_ended" && v["reason"] == "unknown_user"), "{:?}", c.seen);

    // Declined.
    let mut c = spawn(&server.url, &["call", "dave", "--as", "u2"]);
    assert_eq!(c.wait_exit(Duration::from_secs(15)), 8);

    // Name taken.
    let mut c = spawn(&server.url, &["register", "dave"]);
    assert_eq!(c.wait_exit(Duration::from_secs(15)), 5);
    assert!(c.seen.iter().any(|v| v["reason"] == "name_taken"), "{:?}", c.seen);

    // Busy: frank is in a call with grace, then henry calls frank.
    let mut frank = spawn(&server.url, &["register", "frank", "--auto-answer", "accept"]);
    frank.wait_event("registered", Duration::from_secs(10));
    let mut grace = spawn(&server.url, &["call", "frank", "--as", "grace"]);
    grace.wait_event("call_started", Duration::from_secs(15));
    let mut henry = spawn(&server.url, &["call", "frank", "--as", "henry"]);
    assert_eq!(henry.wait_exit(Duration::from_secs(15)), 7);
    grace.interrupt();
    assert_eq!(grace.wait_exit(Duration::from_secs(10)), 0);

    // Server down.
    drop(dave);
    drop(frank);
    drop(server);
    let mut c = spawn("ws://127.0.0.1:1/one2one", &["call", "x", "--as", "y"]);
    assert_eq!(c.wait_exit(Duration::from_secs(15)), 3);

    // No camera.
    let out = Command::new(BIN).args(["--headless", "--video", "camera", "call", "x", "--as", "y"]).output().unwrap();
    assert_eq!(out.status.code(), Some(11));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--video test"), "{err}");
}

#[test]
fn tls_refused_unless_trusted() {
    let server = TestServer::start_with(true);
    let mut c = spawn(&server.url, &["register", "tina"]);
    assert_eq!(c.wait_exit(Duration::from_secs(15)), 4);
    let err = c.seen.iter().find(|v| v["event"] == "error").expect("an error event");
    let msg = err["message"].as_str().unwrap();
    assert!(msg.starts_with("TLS refused") && msg.contains("--insecure"), "{msg}");
    let mut c = spawn(&server.url, &["--insecure", "register", "tina"]);
    c.wait_event("registered", Duration::from_secs(10));
}

/// The native audio path: carol's microphone is a PulseAudio source that
/// plays 523 Hz, her speaker a PulseAudio sink. dave (tone 660 Hz) must
/// hear 523 Hz, and carol's speaker must play 660 Hz. Both go through cpal,
/// the echo canceller (both devices are live) and the relay.
#[test]
fn microphone_and_speaker_through_pulseaudio() {
    let pulse = Pulse::start("pulse");
    let dir = tmpdir("audio-devices");
    // 30 s of 523 Hz into the sink whose monitor is carol's microphone.
    let tone_path = dir.join("523.wav");
    let mut w = one2one_media::files::WavWriter::new(std::fs::File::create(&tone_path).unwrap(), 48_000, 1).unwrap();
    let mut tone = one2one_media::audio::Tone::new(523.0, 0.4);
    let mut pcm = vec![0i16; 48_000];
    for _ in 0..30 {
        tone.fill(&mut pcm);
        w.write_samples(&pcm).unwrap();
    }
    w.finish().unwrap();
    let mut player = pulse.command("paplay").args(["--device=o2o_mic"]).arg(&tone_path).spawn().expect("paplay");
    // What carol's speaker plays, raw 48 kHz mono.
    let mut rec = pulse
        .command("parec")
        .args(["--device=o2o_speaker.monitor", "--rate=48000", "--channels=1", "--format=s16le", "--raw"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("parec");
    let mut rec_out = rec.stdout.take().unwrap();
    let captured = std::thread::spawn(move || {
        let mut bytes = vec![];
        let _ = std::io::Read::read_to_end(&mut rec_out, &mut bytes);
        bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect::<Vec<i16>>()
    });

    let server = TestServer::start();
    let dave_rec = dir.join("dave");
    // Through ALSA's `pulse` device (libasound2-plugins), as desktop
    // systems with PulseAudio or PipeWire route it.
    let mut carol = spawn_env(
        &server.url,
        &["register", "carol", "--auto-answer", "accept", "--audio", "mic:pulse", "--speaker", "pulse"],
        &[("PULSE_SERVER", &pulse.server), ("PULSE_SOURCE", "o2o_mic.monitor"), ("PULSE_SINK", "o2o_speaker")],
    );
    carol.wait_event("registered", Duration::from_secs(10));
    let mut dave = spawn(
        &server.url,
        &[
            "call",
            "carol",
            "--as",
            "dave",
            "--hangup-after",
            "5",
            "--audio",
            "tone:660",
            "--speaker",
            "none",
            "--record-remote",
            dave_rec.to_str().unwrap(),
        ],
    );
    dave.wait_event("call_started", Duration::from_secs(15));
    carol.wait_event("call_started", Duration::from_secs(15));
    dave.wait_event("call_ended", Duration::from_secs(20));
    assert_eq!(dave.wait_exit(Duration::from_secs(10)), 0);
    carol.wait_event("call_ended", Duration::from_secs(10));
    carol.interrupt();
    assert_eq!(carol.wait_exit(Duration::from_secs(10)), 0);
    let _ = rec.kill();
    let _ = rec.wait();
    let _ = player.kill();
    let _ = player.wait();
    let errors: Vec<_> = carol.seen.iter().filter(|v| v["event"] == "error").collect();
    assert!(errors.is_empty(), "carol's devices failed: {errors:?}");

    // dave hears carol's microphone.
    check_tone(&dave_rec.with_extension("wav"), 523.0, "dave (carol's microphone)");
    // carol's speaker played dave's tone: the loudest second of the capture.
    let played = captured.join().unwrap();
    assert!(played.len() > 48_000, "parec captured only {} samples", played.len());
    let (best, level) =
        played.chunks(48_000).map(|s| (s, one2one_media::analysis::rms(s))).max_by(|a, b| a.1.total_cmp(&b.1)).unwrap();
    assert!(level > 0.02, "carol's speaker stayed silent (rms {level})");
    let hz = dominant_frequency(best, 48_000).expect("audio");
    assert!((hz - 660.0).abs() / 660.0 < 0.02, "carol's speaker played {hz:.1} Hz, expected 660 Hz");
    println!("dave heard carol's microphone at 523 Hz; carol's speaker played {hz:.1} Hz at rms {level:.3}");
}
