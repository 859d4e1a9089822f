#!/usr/bin/env bash
# Signaling scale of one2one-server on loopback: 10,000 registered idle
# WebSockets (server RSS per socket), register rate, call→reject rate.
# Usage: bench/sigscale.sh [one2one-sigscale options...]
# Env: SERVER (default target/release/one2one-server), PORT (default 18500),
# KEEP_LOG=1 to keep the server's log (about 130 MB per 280k calls at info),
# RUST_LOG for the server's log level.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps
cargo build --release -p one2one-server -p one2one-bench
SERVER=${SERVER:-target/release/one2one-server}
PORT=${PORT:-18500}
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
echo "open-file limit $(ulimit -n); $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $(date -u +%FT%TZ)"
LOG=$(mktemp /tmp/sigscale-server.XXXXXX.log)
# The idle sockets are held without reading (no pongs): a long idle timeout.
"$SERVER" --http --listen "127.0.0.1:$PORT" --ws-idle-timeout 3600 >"$LOG" 2>&1 &
PID=$!
trap 'kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null || true; [ -n "${KEEP_LOG:-}" ] || rm -f "$LOG"' EXIT
for _ in $(seq 50); do
  grep -q listening "$LOG" && break
  sleep 0.1
done
nstat -n 2>/dev/null || true
target/release/one2one-sigscale --url "ws://127.0.0.1:$PORT/one2one" --server-pid "$PID" "$@"
BACKLOG=$(ss -Hltn "sport = :$PORT" | awk '{print $3}')
echo "listen backlog $BACKLOG;" $(nstat -z TcpExtListenOverflows TcpExtTCPSynRetrans 2>/dev/null | awk '/^Tcp/ {print $1, $2}')
[ -z "${KEEP_LOG:-}" ] || echo "server log: $LOG"
