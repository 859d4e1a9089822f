use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use one2one_server::media::MediaConfig;
use one2one_server::media::kurento::KurentoConfig;
use one2one_server::media::relay::{PortPolicy, RelayConfig};
use one2one_server::ws::WsLimits;
use one2one_server::{IceServer, ServerConfig, Transport, signaling, tls};

/// one2one-server: one-to-one video calls between browsers and terminals,
/// with the media relayed through this server.
#[derive(Parser, Debug)]
#[command(version, about, after_help = AFTER_HELP)]
struct Args {
    /// Address and port for HTTPS, WSS and the web client.
    #[arg(long, default_value = "0.0.0.0:8443", env = "ONE2ONE_LISTEN")]
    listen: SocketAddr,
    /// Serve plain HTTP and WS (behind a TLS-terminating proxy).
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    http: bool,
    /// PEM certificate chain (X.509 v3); without it a self-signed one is
    /// made at start for localhost, this host's name and the listen,
    /// media and public addresses.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Log format on stderr: text (colours only on a terminal) or json
    /// (one object per line).
    #[arg(long, value_enum, default_value_t = one2one_server::logging::LogFormat::Text)]
    log_format: one2one_server::logging::LogFormat,
    /// Where calls get their media.
    #[arg(long, value_enum, default_value_t = Media::Embedded)]
    media: Media,
    /// Kurento Media Server to put calls on, as ws://HOST:PORT/kurento
    /// (repeatable: each new call goes to the reachable one with the fewest
    /// calls).
    #[arg(long = "kms-uri", value_name = "URI", help_heading = "Kurento (--media kurento)")]
    kms_uris: Vec<String>,
    /// Seconds any one request to a media server may take before the call
    /// it serves fails (0.5 to 60).
    #[arg(long, value_name = "SECS", default_value_t = 4.0, value_parser = parse_kms_timeout, help_heading = "Kurento (--media kurento)")]
    kms_timeout: f64,
    /// Also be a Kurento Media Server for kurento-client apps: plain
    /// WebSocket on ws://ADDR/kurento, each WebRtcEndpoint a leg of the
    /// embedded relay (off by default).
    #[arg(long, value_name = "ADDR", help_heading = "KMS endpoint (--kms-listen)")]
    kms_listen: Option<SocketAddr>,
    /// Seconds an unanswered call rings before it ends (1 to 86400).
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    ring_timeout: u64,
    /// Largest signaling message in bytes (512 to 16777216); larger ones
    /// get an error, and those over four times this (at least 64 KiB) get
    /// the error and close the socket (1009).
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024, value_parser = parse_max_message)]
    max_message_bytes: usize,
    /// Sustained signaling messages per second per connection (bursts of
    /// 200 are allowed); more are refused, and a socket that keeps on is
    /// closed (1008).
    #[arg(long, value_name = "PER_SEC", default_value_t = 50.0, value_parser = parse_rate)]
    rate_limit: f64,
    /// Seconds a signaling socket may stay silent (no message, not even a
    /// pong to the server's pings, sent every half of it) before it is
    /// closed, its name freed and its call ended (1 to 3600).
    #[arg(long, value_name = "SECS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3600))]
    ws_idle_timeout: u64,
    /// UDP ports for media, as LOW-HIGH: one port per call leg, so two per
    /// call, and at most (HIGH-LOW+1)/2 calls at once (more callers hear
    /// "server busy" before anyone is rung).
    #[arg(long, value_name = "LOW-HIGH", value_parser = parse_range, help_heading = "Embedded relay (--media embedded, --kms-listen)")]
    udp_port_range: Option<(u16, u16)>,
    /// Local addresses to gather media candidates on (repeatable). Default:
    /// every non-loopback interface.
    #[arg(long = "media-ip", value_name = "IP", help_heading = "Embedded relay (--media embedded, --kms-listen)")]
    media_ips: Vec<IpAddr>,
    /// Public address to advertise for media (1:1 NAT, e.g. a cloud VM),
    /// in addition to the local addresses (repeatable).
    #[arg(long, value_name = "IP", help_heading = "Embedded relay (--media embedded, --kms-listen)")]
    public_ip: Vec<IpAddr>,
    /// Advertise only the --public-ip addresses, not the local ones (for a
    /// NAT where clients can never reach the private address).
    #[arg(long, requires = "public_ip", help_heading = "Embedded relay (--media embedded, --kms-listen)")]
    public_ip_only: bool,
    /// STUN or TURN URL for ICE (repeatable): stun:HOST[:PORT] or
    /// turn:HOST[:PORT]; also handed to web clients through /api/config.
    #[arg(long = "ice-server", value_name = "URL")]
    ice_servers: Vec<String>,
    /// Username for the TURN URLs in --ice-server. NOTE: /api/config hands
    /// this static username and credential to anyone who asks.
    #[arg(long, value_name = "USER", requires = "ice_credential")]
    ice_username: Option<String>,
    /// Serve the files of this folder (it needs an index.html) instead of
    /// the built-in web client (e.g. the Kurento tutorial's own static/).
    #[arg(long, value_name = "DIR")]
    web_root: Option<PathBuf>,
    /// Credential for the TURN URLs in --ice-server (see --ice-username).
    #[arg(long, value_name = "SECRET", requires = "ice_username")]
    ice_credential: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Media {
    /// The built-in WebRTC relay: nothing else has to run.
    Embedded,
    /// Kurento Media Servers (--kms-uri): a pipeline per call, as the
    /// Kurento tutorial does.
    Kurento,
}

const AFTER_HELP: &str = "\
HTTP endpoints:
  /            the web client (or --web-root)
  /one2one     the signaling WebSocket (Kurento one-to-one tutorial protocol)
  /api/config  ICE servers for the page (with the static TURN credential, if any)
  /healthz     answers `ok`
  /metrics     Prometheus text: connections, users, calls, outcomes, relayed
               packets, refusals, call set-up time

Logs go to stderr. RUST_LOG sets the level (default info; the WebRTC stack
stays at warn or error unless RUST_LOG names it, e.g. RUST_LOG=info,webrtc=debug).

Signals: SIGINT and SIGTERM tell every user in a call, release all media,
close every socket with 1001 and exit. SIGHUP reloads --tls-cert and
--tls-key for new connections (a self-signed certificate or --http: nothing
to reload); it never stops the server.";

fn parse_max_message(s: &str) -> Result<usize, String> {
    let v: usize = s.parse().map_err(|_| "must be a number of bytes from 512 to 16777216".to_owned())?;
    if (512..=16 * 1024 * 1024).contains(&v) { Ok(v) } else { Err("must be from 512 to 16777216 bytes".into()) }
}

fn parse_kms_timeout(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| "must be seconds, from 0.5 to 60".to_owned())?;
    if v.is_finite() && (0.5..=60.0).contains(&v) { Ok(v) } else { Err("must be from 0.5 to 60 seconds".into()) }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| "must be messages per second, more than 0".to_owned())?;
    if v.is_finite() && v > 0.0 && v <= 100_000.0 {
        Ok(v)
    } else {
        Err("must be messages per second, more than 0 and at most 100000".into())
    }
}

/// Refuses a setting at start: the message names the flag; exit 2, as
/// clap does for the command line.
fn refuse(message: &str) -> ! {
    use clap::CommandFactory as _;
    Args::command().error(clap::error::ErrorKind::ValueValidation, message).exit()
}

fn ports_in(lo: u16, hi: u16) -> usize {
    usize::from(hi - lo) + 1
}

fn parse_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s.split_once('-').ok_or("expected LOW-HIGH, e.g. 40000-40999")?;
    let lo: u16 = a.trim().parse().map_err(|e| format!("{a}: {e}"))?;
    let hi: u16 = b.trim().parse().map_err(|e| format!("{b}: {e}"))?;
    if lo == 0 || lo > hi {
        return Err("LOW must be at least 1 and not above HIGH".into());
    }
    if hi == lo {
        return Err("a call needs two ports (one per leg): give at least LOW-(LOW+1)".into());
    }
    Ok((lo, hi))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let repeats = one2one_server::logging::init(args.log_format);
    check(&args);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
    rt.block_on(async move {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            loop {
                tick.tick().await;
                one2one_server::logging::report_suppressed(&repeats);
            }
        });
        run(args).await
    })
}

/// What clap cannot see: settings that would start a broken server.
fn check(args: &Args) {
    match args.media {
        Media::Kurento if args.kms_uris.is_empty() => {
            refuse("--media kurento needs at least one --kms-uri ws://HOST:PORT/kurento")
        }
        Media::Embedded if !args.kms_uris.is_empty() => refuse("--kms-uri needs --media kurento"),
        _ => {}
    }
    for uri in &args.kms_uris {
        if let Err(e) = one2one_server::checks::kms_uri(uri) {
            refuse(&e);
        }
    }
    let has_credentials = args.ice_username.is_some() && args.ice_credential.is_some();
    for url in &args.ice_servers {
        if let Err(e) = one2one_server::checks::ice_server(url, has_credentials) {
            refuse(&e);
        }
    }
    if let Some(dir) = &args.web_root
        && let Err(e) = one2one_server::checks::web_root(dir)
    {
        refuse(&e);
    }
    if let Some(cert) = &args.tls_cert {
        let report = one2one_server::checks::certificate(cert, unix_now());
        if let Some(e) = report.errors.first() {
            refuse(e);
        }
        // The pair must load (a key that does not match, an unreadable
        // file) before anything listens.
        if let Some(key) = &args.tls_key
            && let Err(e) = tls::from_files(cert, key)
        {
            refuse(&format!("--tls-cert {} / --tls-key {}: {e:#}", cert.display(), key.display()));
        }
        for w in &report.warnings {
            tracing::warn!("{w}");
            if args.log_format == one2one_server::logging::LogFormat::Text {
                eprintln!("one2one-server: WARNING: {w}");
            }
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let json = args.log_format == one2one_server::logging::LogFormat::Json;
    let ice_servers: Vec<IceServer> = args
        .ice_servers
        .iter()
        .map(|url| {
            let turn = url.starts_with("turn:") || url.starts_with("turns:");
            IceServer {
                urls: vec![url.clone()],
                username: if turn { args.ice_username.clone() } else { None },
                credential: if turn { args.ice_credential.clone() } else { None },
            }
        })
        .collect();
    let ports = match args.udp_port_range {
        Some((lo, hi)) => PortPolicy::Range(lo, hi),
        None => PortPolicy::Ephemeral,
    };
    let config = ServerConfig {
        signaling: signaling::Config {
            ring_timeout: Duration::from_secs(args.ring_timeout),
            // One UDP port per call leg: more calls than half the range
            // cannot get media, so they are refused before ringing (a
            // Kurento server has its own ports).
            max_calls: args
                .udp_port_range
                .filter(|_| args.media == Media::Embedded)
                .map(|(lo, hi)| ports_in(lo, hi) / 2),
            ..Default::default()
        },
        limits: WsLimits {
            max_message: args.max_message_bytes,
            rate_per_sec: args.rate_limit,
            idle_timeout: Duration::from_secs(args.ws_idle_timeout),
            ..Default::default()
        },
        relay: RelayConfig {
            ports,
            media_ips: args.media_ips.clone(),
            public_ips: args.public_ip.clone(),
            public_ip_only: args.public_ip_only,
            ..Default::default()
        },
        media: match args.media {
            Media::Embedded => MediaConfig::Embedded,
            Media::Kurento => MediaConfig::Kurento(KurentoConfig {
                uris: args.kms_uris.clone(),
                request_timeout: Duration::from_secs_f64(args.kms_timeout),
                ..Default::default()
            }),
        },
        kms_listen: args.kms_listen,
        ice_servers,
        web_root: args.web_root.clone(),
    };
    // A deep accept queue: bursts of clients (a reconnect storm) are not
    // refused while the server catches up.
    let listener = (|| {
        let socket =
            if args.listen.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        socket.bind(args.listen)?;
        socket.listen(1024)
    })()
    .with_context(|| format!("cannot listen on {}", args.listen))?;
    let (transport, scheme) = if args.http {
        (Transport::Http, "http")
    } else {
        let id = match (&args.tls_cert, &args.tls_key) {
            (Some(c), Some(k)) => tls::from_files(c, k)?,
            _ => {
                // The names a browser may be given: the listen address,
                // the media and public addresses.
                let mut extra: Vec<String> = args.public_ip.iter().map(ToString::to_string).collect();
                extra.extend(args.media_ips.iter().map(ToString::to_string));
                if !args.listen.ip().is_unspecified() {
                    extra.push(args.listen.ip().to_string());
                }
                extra.sort();
                extra.dedup();
                tls::self_signed(&extra)?
            }
        };
        if args.tls_cert.is_none() {
            if json {
                tracing::info!(fingerprint = %id.fingerprint, "self-signed certificate (SHA-256)");
            } else {
                eprintln!("Self-signed certificate, SHA-256 fingerprint:\n  {}", id.fingerprint);
            }
        }
        (Transport::Tls(id.config), "https")
    };
    let server = one2one_server::start(listener, transport, config).await?;
    let host = url_host(server.addr);
    let ws_scheme = if scheme == "https" { "wss" } else { "ws" };
    // A log pipeline gets JSON only: the banner is then a log event.
    if json {
        tracing::info!(url = %format!("{scheme}://{host}/"), signaling = %format!("{ws_scheme}://{host}/one2one"), "one2one-server is up");
    } else {
        eprintln!(
            "one2one-server is up. Open {scheme}://{host}/ in two browser tabs (signaling: {ws_scheme}://{host}/one2one)"
        );
    }
    tracing::info!(addr = %server.addr, "listening");

    shutdown_signal(&server, &args).await;
    tracing::info!("shutting down: telling users and releasing calls");
    if tokio::time::timeout(Duration::from_secs(10), server.shutdown()).await.is_err() {
        tracing::warn!("shutdown took over 10 s; exiting anyway");
    }
    Ok(())
}

/// `host:port` for a URL to the listening address: `localhost` for a
/// wildcard address (0.0.0.0, ::), the IP otherwise (IPv6 in brackets).
fn url_host(addr: SocketAddr) -> String {
    let port = addr.port();
    match addr.ip() {
        ip if ip.is_unspecified() => format!("localhost:{port}"),
        IpAddr::V4(ip) => format!("{ip}:{port}"),
        IpAddr::V6(ip) => format!("[{ip}]:{port}"),
    }
}

/// Waits for SIGINT or SIGTERM. SIGHUP never stops the server: it reloads
/// --tls-cert/--tls-key for new connections (open ones keep theirs, and a
/// pair that does not load leaves the old one in place); with a self-signed
/// certificate or --http there is nothing to reload, and the log says so.
async fn shutdown_signal(server: &one2one_server::Server, args: &Args) {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut hup) = match (signal(SignalKind::terminate()), signal(SignalKind::hangup())) {
        (Ok(term), Ok(hup)) => (term, hup),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "no SIGTERM or SIGHUP handler");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            _ = term.recv() => return,
            _ = hup.recv() => reload_tls(server, args),
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or_default()
}

/// The start-up checks, again for a reloaded certificate: a v1 one is
/// refused (the old stays), an expired one is loaded with a warning.
fn reload_checked(cert: &std::path::Path) -> anyhow::Result<()> {
    let report = one2one_server::checks::certificate(cert, unix_now());
    if let Some(e) = report.errors.into_iter().next() {
        anyhow::bail!(e);
    }
    for w in report.warnings {
        tracing::warn!("SIGHUP: {w}");
    }
    Ok(())
}

fn reload_tls(server: &one2one_server::Server, args: &Args) {
    match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => match reload_checked(cert).and_then(|()| tls::from_files(cert, key)) {
            Ok(id) => {
                server.reload_tls(id.config);
                tracing::info!(cert = %cert.display(), fingerprint = %id.fingerprint, "SIGHUP: TLS certificate reloaded for new connections");
            }
            Err(e) => {
                tracing::error!(
                    error = format!("{e:#}"),
                    "SIGHUP: TLS certificate not reloaded; the old one stays in use"
                )
            }
        },
        _ if args.http => tracing::info!("SIGHUP: nothing to reload (plain HTTP); still running"),
        _ => tracing::info!("SIGHUP: nothing to reload (self-signed certificate); still running"),
    }
}
