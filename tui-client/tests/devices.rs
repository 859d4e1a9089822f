//! `one2one devices` and the start-up device check with the real binary:
//! only devices a user can pick are listed, the default is marked when
//! there is one, ALSA's own messages stay off stderr, and a speaker that
//! cannot be found ends the program like a missing microphone (exit 11).

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{BIN, Pulse, tmpdir};
const NO_DEVICE: i32 = 11;
const SERVER_UNREACHABLE: i32 = 3;
/// Nothing listens on the discard port: a client that got past its device
/// check exits 3 (server unreachable).
const NOWHERE: &str = "ws://127.0.0.1:9/one2one";

/// ALSA plugins that ALSA's configuration defines whether or not they lead
/// anywhere; none of them is a device to pick.
const PLUGINS: &[&str] = &[
    "null",
    "lavrate",
    "samplerate",
    "speexrate",
    "jack",
    "oss",
    "upmix",
    "vdownmix",
    "dmix",
    "dsnoop",
    "a52",
    "speex",
    "usbstream",
];

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn assert_no_alsa_lines(&self) {
        let noise: Vec<&str> = self.stderr.lines().filter(|l| l.contains("ALSA lib")).collect();
        assert!(noise.is_empty(), "ALSA's messages reached stderr:\n{}", self.stderr);
    }
}

/// Runs the binary to its end (at most 30 s) with no sound server in
/// reach unless `env` names one: `PULSE_SERVER` points at nothing and the
/// runtime directory (PipeWire's socket) is empty.
fn run(name: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let dir = tmpdir(&format!("run-{name}"));
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("HOME", &dir)
        .env("XDG_RUNTIME_DIR", &dir)
        .env("XDG_STATE_HOME", &dir)
        .env("PULSE_SERVER", format!("unix:{}", dir.join("no-pulse").display()))
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("the one2one binary");
    let pipe = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    };
    let out = pipe(child.stdout.take().map(|r| Box::new(r) as Box<dyn Read + Send>));
    let err = pipe(child.stderr.take().map(|r| Box::new(r) as Box<dyn Read + Send>));
    let code = wait(&mut child, Duration::from_secs(30), &format!("one2one {}", args.join(" ")));
    let _ = std::fs::remove_dir_all(&dir);
    Run { code, stdout: out.join().unwrap(), stderr: err.join().unwrap() }
}

fn wait(child: &mut Child, limit: Duration, what: &str) -> i32 {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One audio section of `one2one devices`: its header and its device lines
/// as `(marked default, id)`.
struct Section {
    header: String,
    notes: Vec<String>,
    devices: Vec<(bool, String)>,
}

fn section(stdout: &str, title: &str) -> Section {
    let mut lines = stdout.lines().skip_while(|l| !l.starts_with(title));
    let header = lines.next().unwrap_or_else(|| panic!("no {title} section in:\n{stdout}")).to_owned();
    let (mut notes, mut devices) = (vec![], vec![]);
    for l in lines.take_while(|l| l.starts_with("  ")) {
        let l = &l[2..];
        if let Some(rest) = l.strip_prefix("* ") {
            devices.push((true, rest.split_whitespace().next().unwrap_or_default().to_owned()));
        } else if let Some(rest) = l.strip_prefix("  ") {
            devices.push((false, rest.split_whitespace().next().unwrap_or_default().to_owned()));
        } else {
            notes.push(l.to_owned());
        }
    }
    Section { header, notes, devices }
}

/// The legend promises a default exactly when one is marked; without one
/// the section says what to do instead.
fn check_section(s: &Section, instead: &str) {
    let marked = s.devices.iter().filter(|(d, _)| *d).count();
    assert!(marked <= 1, "more than one default: {:?}", s.devices);
    if marked == 1 {
        assert!(s.header.contains("* = default"), "{}", s.header);
        assert_eq!(s.devices[0], (true, "default".to_owned()), "the default comes first");
    } else {
        assert!(!s.header.contains("default"), "a legend promising a default that is not there: {}", s.header);
        assert!(s.notes.iter().any(|n| n.contains(instead)), "no hint at {instead}: {:?}", s.notes);
    }
    for (_, id) in &s.devices {
        let kind = id.split(':').next().unwrap_or_default();
        assert!(
            !PLUGINS.contains(&kind) && !kind.starts_with("surround") && kind != "hw",
            "a bare ALSA plugin listed: {id}"
        );
    }
}

/// An ALSA configuration that defines no device at all, not even
/// `default`: a machine without any sound, whatever this one has.
fn no_sound_config(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("one2one-devtest-{name}-{}.conf", std::process::id()));
    std::fs::write(&path, "# no devices\n").unwrap();
    path
}

#[test]
fn devices_without_a_sound_server_lists_no_plugins_and_no_alsa_lines() {
    let r = run("list", &["devices"], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    r.assert_no_alsa_lines();
    let mics = section(&r.stdout, "microphones");
    let speakers = section(&r.stdout, "speakers");
    check_section(&mics, "--audio tone");
    check_section(&speakers, "--speaker none");
    // No sound server runs for this process: its ALSA device is not offered.
    for s in [&mics, &speakers] {
        assert!(!s.devices.iter().any(|(_, id)| id == "pulse"), "pulse listed without PulseAudio:\n{}", r.stdout);
    }
}

#[test]
fn devices_on_a_machine_without_sound_says_what_to_use() {
    let conf = no_sound_config("empty-list");
    let r = run("empty-list", &["devices"], &[("ALSA_CONFIG_PATH", conf.to_str().unwrap())]);
    let _ = std::fs::remove_file(&conf);
    assert_eq!(r.code, 0, "{}", r.stderr);
    r.assert_no_alsa_lines();
    let mics = section(&r.stdout, "microphones");
    let speakers = section(&r.stdout, "speakers");
    assert!(mics.devices.is_empty() && speakers.devices.is_empty(), "{}", r.stdout);
    check_section(&mics, "--audio tone");
    check_section(&speakers, "--speaker none");
}

#[test]
fn devices_with_pulseaudio_lists_pulse_and_marks_the_default() {
    let pulse = Pulse::start("pulse-list");
    let r = run("pulse-list", &["devices"], &[("PULSE_SERVER", &pulse.server)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    r.assert_no_alsa_lines();
    for (title, instead) in [("microphones", "--audio tone"), ("speakers", "--speaker none")] {
        let s = section(&r.stdout, title);
        check_section(&s, instead);
        assert!(s.devices.iter().any(|(_, id)| id == "pulse"), "no pulse {title}:\n{}", r.stdout);
        assert!(s.devices.contains(&(true, "default".to_owned())), "no default {title} marked:\n{}", r.stdout);
    }
}

#[test]
fn a_speaker_that_is_not_there_exits_11_before_connecting() {
    let r = run(
        "nonexist",
        &[
            "--headless",
            "--server",
            NOWHERE,
            "--video",
            "none",
            "--audio",
            "none",
            "--speaker",
            "nonexist",
            "register",
            "x",
        ],
        &[],
    );
    assert_eq!(r.code, NO_DEVICE, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    r.assert_no_alsa_lines();
    let msg = r.stderr.lines().find(|l| l.contains("nonexist")).unwrap_or_else(|| panic!("no message: {}", r.stderr));
    assert!(msg.contains("--speaker none") && msg.contains("one2one devices"), "{msg}");
    assert!(!r.stdout.contains("registered"), "{}", r.stdout);
}

#[test]
fn a_named_speaker_that_opens_passes_the_check() {
    let pulse = Pulse::start("pulse-speaker");
    let r = run(
        "pulse-speaker",
        &[
            "--headless",
            "--server",
            NOWHERE,
            "--video",
            "none",
            "--audio",
            "none",
            "--speaker",
            "pulse",
            "register",
            "x",
        ],
        &[("PULSE_SERVER", &pulse.server)],
    );
    // Past the device check, the server is not there.
    assert_eq!(r.code, SERVER_UNREACHABLE, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    r.assert_no_alsa_lines();
    assert!(!r.stderr.contains("speaker"), "{}", r.stderr);
}

#[test]
fn no_default_speaker_warns_once_and_goes_on() {
    let conf = no_sound_config("no-default");
    let r = run(
        "no-default",
        &["--headless", "--server", NOWHERE, "--video", "none", "--audio", "none", "register", "x"],
        &[("ALSA_CONFIG_PATH", conf.to_str().unwrap())],
    );
    let _ = std::fs::remove_file(&conf);
    assert_eq!(r.code, SERVER_UNREACHABLE, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    r.assert_no_alsa_lines();
    let warnings: Vec<&str> = r.stderr.lines().filter(|l| l.contains("speaker")).collect();
    assert_eq!(warnings.len(), 1, "{}", r.stderr);
    assert!(warnings[0].contains("warning") && warnings[0].contains("--speaker none"), "{}", warnings[0]);
}

#[test]
fn microphones_that_are_not_there_exit_11_without_alsa_lines() {
    let r = run(
        "mic-nonexist",
        &[
            "--headless",
            "--server",
            NOWHERE,
            "--video",
            "none",
            "--audio",
            "mic:nonexist",
            "--speaker",
            "none",
            "register",
            "x",
        ],
        &[],
    );
    assert_eq!(r.code, NO_DEVICE, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    r.assert_no_alsa_lines();
    assert!(r.stderr.contains("nonexist") && r.stderr.contains("--audio tone"), "{}", r.stderr);

    // The default microphone of a machine without sound.
    let conf = no_sound_config("mic-default");
    let r = run(
        "mic-default",
        &["--headless", "--server", NOWHERE, "--video", "none", "--audio", "mic", "--speaker", "none", "register", "x"],
        &[("ALSA_CONFIG_PATH", conf.to_str().unwrap())],
    );
    let _ = std::fs::remove_file(&conf);
    assert_eq!(r.code, NO_DEVICE, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    r.assert_no_alsa_lines();
    assert_eq!(r.stderr.lines().count(), 1, "one message, nothing else: {}", r.stderr);

    // Whatever this machine has: ALSA's messages never show.
    let r = run(
        "mic-here",
        &["--headless", "--server", NOWHERE, "--video", "none", "--audio", "mic", "--speaker", "none", "register", "x"],
        &[],
    );
    assert!([NO_DEVICE, SERVER_UNREACHABLE].contains(&r.code), "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    r.assert_no_alsa_lines();
}
