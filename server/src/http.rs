//! Routes: the web client, `/one2one`, `/api/config`, `/healthz`, `/metrics`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::AppState;

const INDEX_HTML: &str = include_str!("../static/index.html");
const APP_JS: &str = include_str!("../static/app.js");
const STYLE_CSS: &str = include_str!("../static/style.css");

/// With `web_root`, the files under it are served instead of the built-in
/// page: for example the Kurento tutorial's own `static/` folder (with its
/// `bower_components`), which then talks to this server unchanged.
pub fn router(state: Arc<AppState>, web_root: Option<&std::path::Path>) -> Router {
    let router = match web_root {
        Some(root) => Router::new().fallback_service(tower_http::services::ServeDir::new(root)),
        None => Router::new()
            .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
            .route("/index.html", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
            .route("/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
            .route("/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) })),
    };
    router
        .route("/api/config", get(client_config))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/one2one", get(upgrade))
        .with_state(state)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut resp = body.into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

async fn client_config(State(app): State<Arc<AppState>>) -> Response {
    let mut resp = app.client_config.clone().into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// `ok`, or 503 `degraded: why` when a part cannot serve calls (no
/// Kurento Media Server reachable).
async fn healthz(State(app): State<Arc<AppState>>) -> Response {
    match app.metrics.degraded() {
        None => "ok\n".into_response(),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("degraded: {why}\n")).into_response(),
    }
}

async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    let mut resp = (StatusCode::OK, app.metrics.render()).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    resp
}

async fn upgrade(
    ws: WebSocketUpgrade,
    State(app): State<Arc<AppState>>,
    ConnectInfo(crate::ws::PeerAddr(peer)): ConnectInfo<crate::ws::PeerAddr>,
) -> Response {
    let hard = app.limits.hard_limit();
    // Signaling messages are small: a 4 KiB read buffer (it grows for a
    // larger frame) instead of tungstenite's 128 KiB, which is zero-filled
    // and so resident for every idle socket.
    ws.max_message_size(hard)
        .max_frame_size(hard)
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .on_upgrade(move |socket| crate::ws::serve_socket(socket, app, peer))
}
