// Pieces shared by the Kurento tests (kurento-listen.mjs, kurento-media.mjs):
// what they need checked up front (with what to install when it is missing),
// the kurento-client test app as a child process, media that keeps arriving
// (getStats), Chromium's fake camera on a canvas and in a y4m recording,
// and the server's /metrics gauges.
import { spawn, execFile, execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { check, until, ROOT, IP } from './lib.mjs';

export const SERVER_BIN = process.env.ONE2ONE_SERVER_BIN || join(ROOT, 'target/debug/one2one-server');
export const CLIENT_BIN = process.env.ONE2ONE_CLIENT_BIN || join(ROOT, 'target/debug/one2one');
const E2E = join(ROOT, 'tests-e2e');

/// Throws, naming what to install or build, unless everything a Kurento
/// test needs is here: kurento-client 7.3.0 as locked, the server binary
/// with the flags the test uses, and (when asked) the `one2one` client.
export function requireParts({ serverFlags = [], client = false } = {}) {
  const missing = [];
  const lock = JSON.parse(readFileSync(join(E2E, 'package-lock.json'), 'utf8')).packages;
  for (const pkg of ['kurento-client', 'reconnect-ws', 'ws']) {
    const want = lock[`node_modules/${pkg}`]?.version;
    let have = null;
    try { have = JSON.parse(readFileSync(join(E2E, 'node_modules', pkg, 'package.json'), 'utf8')).version; } catch { /* absent */ }
    if (have !== want) missing.push(`npm package ${pkg} ${want} (have ${have || 'none'}): run \`npm ci --ignore-scripts\` in tests-e2e (scripts/test-browser does it)`);
  }
  if (!existsSync(SERVER_BIN)) {
    missing.push(`${SERVER_BIN}: run \`cargo build -p one2one-server\``);
  } else if (serverFlags.length) {
    const help = execFileSync(SERVER_BIN, ['--help'], { encoding: 'utf8' });
    for (const f of serverFlags) {
      if (!help.includes(f)) missing.push(`one2one-server ${f} (${SERVER_BIN} --help does not list it): rebuild with \`cargo build -p one2one-server\``);
    }
  }
  if (client && !existsSync(CLIENT_BIN)) missing.push(`${CLIENT_BIN}: run \`cargo build -p one2one\``);
  if (!existsSync('/usr/bin/chromium')) missing.push('/usr/bin/chromium: apt-get install chromium (scripts/install-deps --test does it)');
  if (missing.length) throw new Error(`missing for this test:\n  - ${missing.join('\n  - ')}`);
}

/// Waits until something accepts TCP connections on host:port.
export async function tcpOpen(host, port, what = `${host}:${port}`, ms = 20000) {
  const net = await import('node:net');
  await until(`${what} to accept connections`, () => new Promise((resolve) => {
    const s = net.connect(port, host);
    s.on('connect', () => { s.destroy(); resolve(true); });
    s.on('error', () => resolve(false));
  }), ms, 100);
}

/// The kurento-client app (kurento-app/server.js) on 127.0.0.1:port,
/// pointed at wsUri; resolves once its page answers. Its log lines are
/// printed with a prefix and kept in `log`.
export async function startApp(port, wsUri) {
  const proc = spawn(process.execPath, [join(E2E, 'kurento-app/server.js'), `--ws_uri=${wsUri}`, `--port=${port}`], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const log = [];
  for (const stream of [proc.stdout, proc.stderr]) {
    createInterface({ input: stream }).on('line', (l) => { log.push(l); console.log(`[app] ${l}`); });
  }
  const url = `http://127.0.0.1:${port}`;
  await until('the kurento app to serve its page', async () => {
    if (proc.exitCode !== null) throw new Error(`kurento-app/server.js exited with ${proc.exitCode}`);
    try { return (await fetch(`${url}/`)).ok; } catch { return false; }
  }, 20000, 100);
  return { proc, url, log, stop: () => proc.kill('SIGTERM') };
}

/// Inbound media on a page's peer connection (getStats): video frames
/// decoded and their size, audio packets and samples received.
export async function mediaIn(page) {
  return page.evaluate(async () => {
    const pc = window.one2one.pc;
    if (!pc) return null;
    const out = { framesDecoded: 0, width: 0, height: 0, audioPackets: 0, audioSamples: 0, conn: pc.connectionState };
    (await pc.getStats()).forEach((r) => {
      if (r.type !== 'inbound-rtp') return;
      if (r.kind === 'video') { out.framesDecoded = r.framesDecoded || 0; out.width = r.frameWidth || 0; out.height = r.frameHeight || 0; }
      if (r.kind === 'audio') { out.audioPackets = r.packetsReceived || 0; out.audioSamples = r.totalSamplesReceived || 0; }
    });
    return out;
  });
}

/// Checks that `who`'s page keeps decoding video and receiving audio: some
/// of each first, then (within the deadline) 30 more frames and more audio
/// packets and samples than at that first reading.
export async function checkMediaFlows(page, who, what, ms = 30000) {
  const name = `${who} decodes ${what}'s video and receives its audio`;
  let first = null;
  try {
    first = await until(`${who} to get video frames and audio`, async () => {
      const s = await mediaIn(page);
      return s && s.framesDecoded > 0 && s.audioPackets > 0 && s.audioSamples > 0 ? s : null;
    }, ms, 250);
    const later = await until(`${who}'s frames and audio to keep coming`, async () => {
      const s = await mediaIn(page);
      return s && s.framesDecoded >= first.framesDecoded + 30 && s.audioPackets > first.audioPackets
        && s.audioSamples > first.audioSamples ? s : null;
    }, ms, 250);
    check(name, true, `frames ${first.framesDecoded} → ${later.framesDecoded} at ${later.width}x${later.height}, `
      + `audio packets ${first.audioPackets} → ${later.audioPackets}, samples ${first.audioSamples} → ${later.audioSamples}`);
  } catch (e) {
    check(name, false, `${e.message}; first ${JSON.stringify(first)}, now ${JSON.stringify(await mediaIn(page).catch(() => null))}`);
  }
}

/// Chromium's fake camera is a green picture (about rgb(0,135,0), with a
/// brighter green pacman and a frame counter).
export const isFakeCameraGreen = (r, g, b) => g >= 90 && r <= 80 && b <= 80;

/// The share of a page's remote video, sampled on a grid through a canvas,
/// that shows the fake camera's green.
async function greenOnCanvas(page) {
  return page.evaluate((fn) => {
    const green = new Function(`return ${fn}`)();
    const v = document.querySelector('#remote');
    if (!v || !v.videoWidth) return null;
    const c = document.createElement('canvas');
    c.width = v.videoWidth; c.height = v.videoHeight;
    const g = c.getContext('2d');
    g.drawImage(v, 0, 0);
    const d = g.getImageData(0, 0, c.width, c.height).data;
    let good = 0, total = 0;
    for (let j = 0; j < 24; j++) {
      for (let i = 0; i < 32; i++) {
        const x = Math.floor((i + 0.5) * c.width / 32), y = Math.floor((j + 0.5) * c.height / 24);
        const k = (y * c.width + x) * 4;
        total++;
        if (green(d[k], d[k + 1], d[k + 2])) good++;
      }
    }
    return { share: good / total, width: c.width, height: c.height };
  }, isFakeCameraGreen.toString());
}

export async function checkGreenCanvas(page, who, what) {
  const name = `${who}'s remote video shows ${what}'s camera (Chromium's green fake picture)`;
  try {
    const r = await until(`${who}'s canvas to show the green picture`, async () => {
      const r = await greenOnCanvas(page);
      return r && r.share >= 0.8 ? r : null;
    }, 20000, 250);
    check(name, true, `${Math.round(r.share * 100)}% of samples green, ${r.width}x${r.height}`);
  } catch (e) {
    check(name, false, `${e.message} ${JSON.stringify(await greenOnCanvas(page).catch(() => null))}`);
  }
}

// The `one2one` client's test pattern bars (media/src/pattern.rs BARS).
const BARS = [[192, 192, 192], [192, 192, 0], [0, 192, 192], [0, 192, 0], [192, 0, 192], [192, 0, 0], [0, 0, 192], [16, 16, 16]];

/// The share of points on two rows of a page's remote video that show one
/// of the client's bar colours, and how many bars were seen.
async function barsOnCanvas(page) {
  return page.evaluate((bars) => {
    const v = document.querySelector('#remote');
    if (!v || !v.videoWidth) return null;
    const c = document.createElement('canvas');
    c.width = v.videoWidth; c.height = v.videoHeight;
    const g = c.getContext('2d');
    g.drawImage(v, 0, 0);
    let good = 0, total = 0;
    const seen = new Set();
    for (const fy of [0.2, 0.4]) {
      for (let i = 0; i < 64; i++) {
        const [r, gg, b] = g.getImageData(Math.floor((i + 0.5) * c.width / 64), Math.floor(c.height * fy), 1, 1).data;
        total++;
        const k = bars.findIndex(([br, bg, bb]) => Math.max(Math.abs(br - r), Math.abs(bg - gg), Math.abs(bb - b)) <= 40);
        if (k >= 0) { good++; seen.add(k); }
      }
    }
    return { share: good / total, distinct: seen.size, width: c.width, height: c.height };
  }, BARS);
}

export async function checkBarsCanvas(page, who, what) {
  const name = `${who}'s remote video shows ${what}'s colour bars`;
  try {
    const r = await until(`${who}'s canvas to show the colour bars`, async () => {
      const r = await barsOnCanvas(page);
      return r && r.share >= 0.8 && r.distinct >= 7 ? r : null;
    }, 20000, 250);
    check(name, true, `${Math.round(r.share * 100)}% of samples on ${r.distinct} bars, ${r.width}x${r.height}`);
  } catch (e) {
    check(name, false, `${e.message} ${JSON.stringify(await barsOnCanvas(page).catch(() => null))}`);
  }
}

/// A y4m file (8-bit 4:2:0): its size, frame count, and for each frame the
/// share of a grid of samples that shows the fake camera's green (BT.601
/// limited range to RGB).
export function y4mGreen(path) {
  const buf = readFileSync(path);
  const eol = buf.indexOf(0x0a);
  const header = buf.subarray(0, eol).toString('latin1');
  const w = Number(/ W(\d+)/.exec(header)?.[1]);
  const h = Number(/ H(\d+)/.exec(header)?.[1]);
  if (!header.startsWith('YUV4MPEG2') || !w || !h) throw new Error(`${path}: not a y4m stream (${JSON.stringify(header)})`);
  const ySize = w * h, cSize = (w / 2) * (h / 2);
  const shares = [];
  let at = eol + 1;
  while (at < buf.length) {
    const fe = buf.indexOf(0x0a, at);
    if (fe < 0 || !buf.subarray(at, fe).toString('latin1').startsWith('FRAME')) break;
    const p = fe + 1;
    if (p + ySize + 2 * cSize > buf.length) break;
    let good = 0, total = 0;
    for (let j = 0; j < 24; j++) {
      for (let i = 0; i < 32; i++) {
        const x = Math.floor((i + 0.5) * w / 32), y = Math.floor((j + 0.5) * h / 24);
        const Y = buf[p + y * w + x];
        const ci = (y >> 1) * (w / 2) + (x >> 1);
        const U = buf[p + ySize + ci] - 128, V = buf[p + ySize + cSize + ci] - 128;
        const c = 1.164 * (Y - 16);
        total++;
        if (isFakeCameraGreen(c + 1.596 * V, c - 0.392 * U - 0.813 * V, c + 2.017 * U)) good++;
      }
    }
    shares.push(good / total);
    at = p + ySize + 2 * cSize;
  }
  return { width: w, height: h, frames: shares.length, shares };
}

/// A 16-bit PCM WAV file: its sample rate, length and RMS level (0..1).
export function wavLevel(path) {
  const buf = readFileSync(path);
  if (buf.toString('latin1', 0, 4) !== 'RIFF' || buf.toString('latin1', 8, 12) !== 'WAVE') throw new Error(`${path}: not a WAV file`);
  let at = 12, rate = 0, channels = 1, data = null;
  while (at + 8 <= buf.length) {
    const id = buf.toString('latin1', at, at + 4), size = buf.readUInt32LE(at + 4);
    if (id === 'fmt ') { channels = buf.readUInt16LE(at + 10); rate = buf.readUInt32LE(at + 12); }
    if (id === 'data') { data = buf.subarray(at + 8, Math.min(buf.length, at + 8 + size)); break; }
    at += 8 + size + (size & 1);
  }
  if (!data) throw new Error(`${path}: no data chunk`);
  let sum = 0;
  const n = Math.floor(data.length / 2);
  for (let i = 0; i < n; i++) { const s = data.readInt16LE(i * 2) / 32768; sum += s * s; }
  return { rate, channels, seconds: rate ? n / channels / rate : 0, rms: n ? Math.sqrt(sum / n) : 0 };
}

/// The server's /metrics as a map from series (name with labels) to value.
export async function metrics(baseUrl) {
  const text = await new Promise((resolve, reject) => {
    execFile('curl', ['-sk', '--max-time', '5', `${baseUrl}/metrics`], { encoding: 'utf8' }, (e, out) => (e ? reject(e) : resolve(out)));
  });
  const out = new Map();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^(\S+)\s+(\S+)/.exec(line);
    if (m) out.set(m[1], Number(m[2]));
  }
  return out;
}

/// Checks, within the deadline, that the gauges have these values.
export async function checkGauges(baseUrl, want, name, ms = 10000) {
  let last = null;
  try {
    await until(`${JSON.stringify(want)} on ${baseUrl}/metrics`, async () => {
      const m = await metrics(baseUrl);
      last = Object.fromEntries(Object.keys(want).map((k) => [k, m.has(k) ? m.get(k) : 'absent']));
      return Object.entries(want).every(([k, v]) => m.get(k) === v);
    }, ms, 200);
    check(name, true, Object.entries(want).map(([k, v]) => `${k} ${v}`).join(', '));
  } catch (e) {
    check(name, false, `${e.message}; last seen ${JSON.stringify(last)}`);
  }
}

export { IP };
