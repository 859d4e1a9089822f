use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use one2one_server::media::relay::{PortPolicy, RelayConfig};
use one2one_server::ws::WsLimits;
use one2one_server::{IceServer, ServerConfig, Transport, signaling, tls};
use tracing_subscriber::EnvFilter;

/// one2one-server: one-to-one video calls between browsers and terminals,
/// with the media relayed through this server.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address and port for HTTPS, WSS and the web client.
    #[arg(long, default_value = "0.0.0.0:8443", env = "ONE2ONE_LISTEN")]
    listen: SocketAddr,
    /// Serve plain HTTP and WS (behind a TLS-terminating proxy).
    #[arg(long)]
    http: bool,
    /// PEM certificate chain; without it a self-signed one is made at start.
    /// SIGHUP reloads it and --tls-key for new connections (and never stops
    /// the server).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Where calls get their media.
    #[arg(long, value_enum, default_value_t = Media::Embedded)]
    media: Media,
    /// Seconds an unanswered call rings before it ends.
    #[arg(long, default_value_t = 60)]
    ring_timeout: u64,
    /// Largest signaling message in bytes; larger ones are refused.
    #[arg(long, default_value_t = 64 * 1024)]
    max_message_bytes: usize,
    /// Sustained signaling messages per second per connection.
    #[arg(long, default_value_t = 50.0)]
    rate_limit: f64,
    /// Seconds a signaling socket may stay silent (no message, not even a
    /// pong to the server's pings, sent every half of it) before it is
    /// closed, its name freed and its call ended (1 to 3600).
    #[arg(long, value_name = "SECS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3600))]
    ws_idle_timeout: u64,
    /// UDP ports for media, as LOW-HIGH (one port per call leg, so two per
    /// call). One port shared by all calls needs a UDP mux, which webrtc
    /// 0.21 does not have yet.
    #[arg(long, value_parser = parse_range)]
    udp_port_range: Option<(u16, u16)>,
    /// Local addresses to gather media candidates on (repeatable). Default:
    /// every non-loopback interface.
    #[arg(long = "media-ip")]
    media_ips: Vec<IpAddr>,
    /// Public address to advertise for media (1:1 NAT, e.g. a cloud VM).
    #[arg(long)]
    public_ip: Vec<IpAddr>,
    /// STUN or TURN URL for ICE (repeatable); also handed to web clients.
    #[arg(long = "ice-server")]
    ice_servers: Vec<String>,
    /// Username for the TURN URLs in --ice-server.
    #[arg(long, requires = "ice_credential")]
    ice_username: Option<String>,
    /// Serve the files of this folder instead of the built-in web client
    /// (e.g. the Kurento tutorial's own static/ folder).
    #[arg(long)]
    web_root: Option<PathBuf>,
    /// Credential for the TURN URLs in --ice-server.
    #[arg(long, requires = "ice_username")]
    ice_credential: Option<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Media {
    /// The built-in WebRTC relay: nothing else has to run.
    Embedded,
}

fn parse_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s.split_once('-').ok_or("expected LOW-HIGH, e.g. 40000-40999")?;
    let lo: u16 = a.trim().parse().map_err(|e| format!("{a}: {e}"))?;
    let hi: u16 = b.trim().parse().map_err(|e| format!("{b}: {e}"))?;
    if lo == 0 || lo > hi {
        return Err("LOW must be at least 1 and not above HIGH".into());
    }
    Ok((lo, hi))
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,webrtc=warn,rtc=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let Media::Embedded = args.media;
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
        signaling: signaling::Config { ring_timeout: Duration::from_secs(args.ring_timeout), ..Default::default() },
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
            ..Default::default()
        },
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
                let extra: Vec<String> = args.public_ip.iter().map(ToString::to_string).collect();
                tls::self_signed(&extra)?
            }
        };
        if args.tls_cert.is_none() {
            eprintln!("Self-signed certificate, SHA-256 fingerprint:\n  {}", id.fingerprint);
        }
        (Transport::Tls(id.config), "https")
    };
    let server = one2one_server::start(listener, transport, config).await?;
    let host = url_host(server.addr);
    eprintln!(
        "one2one-server is up. Open {scheme}://{host}/ in two browser tabs (signaling: {}://{host}/one2one)",
        if scheme == "https" { "wss" } else { "ws" }
    );
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

fn reload_tls(server: &one2one_server::Server, args: &Args) {
    match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => match tls::from_files(cert, key) {
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
