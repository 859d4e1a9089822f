// Debian's firefox-esr for the browser tests, driven over WebDriver BiDi by
// puppeteer-core (Playwright's Firefox needs its own patched build). One
// headless Firefox with fake media (media.navigator.streams.fake), no
// permission prompts and the server's self-signed certificate accepted;
// pages of the web client in it; and what Firefox's fake camera and
// microphone look and sound like, to recognise them on the other side.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { check, until, ROOT } from './lib.mjs';

export const FIREFOX = process.env.ONE2ONE_FIREFOX_BIN || '/usr/bin/firefox-esr';
/// The fake microphone's sine tone (media.navigator.audio.fake_frequency).
export const FAKE_TONE_HZ = 1000;

/// Throws, naming what to install, unless firefox-esr and puppeteer-core
/// (as locked in tests-e2e/package-lock.json) are here.
export function requireFirefox() {
  const missing = [];
  if (!existsSync(FIREFOX)) missing.push(`${FIREFOX}: apt-get install firefox-esr (scripts/install-deps --test does it)`);
  const e2e = join(ROOT, 'tests-e2e');
  const want = JSON.parse(readFileSync(join(e2e, 'package-lock.json'), 'utf8')).packages['node_modules/puppeteer-core']?.version;
  let have = null;
  try { have = JSON.parse(readFileSync(join(e2e, 'node_modules/puppeteer-core/package.json'), 'utf8')).version; } catch { /* absent */ }
  if (have !== want) missing.push(`npm package puppeteer-core ${want} (have ${have || 'none'}): run \`npm ci --ignore-scripts\` in tests-e2e (scripts/test-browser does it)`);
  if (missing.length) throw new Error(`missing for the Firefox test:\n  - ${missing.join('\n  - ')}`);
}

/// Headless firefox-esr over WebDriver BiDi. Its fake camera is a flat
/// picture whose colour cycles (see onFirefoxCycle), its fake microphone a
/// FAKE_TONE_HZ sine.
export async function launchFirefox() {
  requireFirefox();
  const { default: puppeteer } = await import('puppeteer-core');
  // puppeteer makes a fresh profile and removes it on close.
  const browser = await puppeteer.launch({
    browser: 'firefox',
    executablePath: FIREFOX,
    headless: true,
    acceptInsecureCerts: true, // the server's self-signed certificate
    protocolTimeout: 60000,
    extraPrefsFirefox: {
      'media.navigator.streams.fake': true,
      'media.navigator.permission.disabled': true,
      'media.navigator.audio.fake_frequency': FAKE_TONE_HZ,
      // Host candidates as addresses (no mDNS names: nothing resolves them here).
      'media.peerconnection.ice.obfuscate_host_addresses': false,
      // Keep the camera's 640x480 (degradation preference maintain-resolution).
      // By default Firefox starts a call at 320x240 and steps up (480x360, …)
      // as its bandwidth estimate grows, and the client's --record-remote
      // starts its y4m again at each new size, keeping only the last stretch.
      'media.peerconnection.video.lock_scaling': true,
      'media.autoplay.default': 0,
      'media.autoplay.blocking_policy': 0,
      'network.http.http3.enable': false,
      'app.update.enabled': false,
      'browser.shell.checkDefaultBrowser': false,
      'datareporting.policy.dataSubmissionEnabled': false,
      'toolkit.telemetry.enabled': false,
    },
  });
  return browser;
}

/// A page of the web client in Firefox, registered as `name`. Console
/// errors and page errors are printed with the name.
export async function openFirefoxClient(browser, url, name) {
  const page = await browser.newPage();
  page.on('pageerror', (e) => console.log(`[${name} firefox] page error: ${e.message || e}`));
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warn' || m.type() === 'warning') console.log(`[${name} firefox] console.${m.type()}: ${m.text()}`);
  });
  await page.goto(url);
  await page.waitForFunction(() => window.one2one !== undefined, { timeout: 20000, polling: 100 });
  if (name) {
    await page.evaluate((n) => window.one2one.register(n), name);
    await fxWaitState(page, 'idle');
  }
  return page;
}

/// Waits until a Firefox page's window.one2one.state is `state`.
export async function fxWaitState(page, state, ms = 20000) {
  await page.waitForFunction((s) => window.one2one.state === s, { timeout: ms, polling: 100 }, state);
}

// ------------------------------------------------------------ Firefox's fake camera
// Firefox's fake camera (MediaEngineFakeVideoSource) sends one flat colour
// over the whole frame: Y = 128 and (Cb, Cr) moving one step a frame around
// the edge of the chroma square, (16,16) → (240,16) → (240,240) → (16,240)
// → (16,16): green, then cyan, blue, magenta, red, yellow, back to green,
// about 30 s a turn at 30 fps. That is unlike Chromium's camera (a dark
// green picture with a pacman and a counter) and the client's colour bars.

const clip = (v) => Math.max(0, Math.min(255, v));
/// BT.601 limited range, as browsers draw a VP8 frame without colour info.
export function yuvToRgb(y, cb, cr) {
  const c = 1.164 * (y - 16);
  return [clip(c + 1.596 * (cr - 128)), clip(c - 0.392 * (cb - 128) - 0.813 * (cr - 128)), clip(c + 2.017 * (cb - 128))];
}

/// Every colour of the cycle in RGB, one per chroma step.
const CYCLE = (() => {
  const out = [];
  for (let i = 16; i <= 240; i++) {
    for (const [cb, cr] of [[i, 16], [240, i], [i, 240], [16, i]]) out.push(yuvToRgb(128, cb, cr));
  }
  return out;
})();

/// How far (largest channel difference) an RGB colour is from the nearest
/// colour of Firefox's cycle.
export function offCycleRgb([r, g, b]) {
  let best = Infinity;
  for (const [cr, cg, cb] of CYCLE) best = Math.min(best, Math.max(Math.abs(cr - r), Math.abs(cg - g), Math.abs(cb - b)));
  return best;
}

/// A YUV sample's distance from the cycle: |Y - 128| and how far (Cb, Cr)
/// is from the edge of the chroma square.
export function offCycleYuv(y, cb, cr) {
  const edge = Math.min(Math.abs(cb - 16), Math.abs(cb - 240), Math.abs(cr - 16), Math.abs(cr - 240));
  const inside = cb >= 16 - 12 && cb <= 240 + 12 && cr >= 16 - 12 && cr <= 240 + 12;
  return { luma: Math.abs(y - 128), edge: inside ? edge : 255 };
}

/// A page's remote video through a canvas: the median colour of a 32x24
/// grid and the share of the grid within 30 of it (1 for a flat picture).
async function flatOnCanvas(page) {
  return page.evaluate(() => {
    const v = document.querySelector('#remote');
    if (!v || !v.videoWidth) return null;
    const c = document.createElement('canvas');
    c.width = v.videoWidth; c.height = v.videoHeight;
    const g = c.getContext('2d');
    g.drawImage(v, 0, 0);
    const d = g.getImageData(0, 0, c.width, c.height).data;
    const px = [];
    for (let j = 0; j < 24; j++) {
      for (let i = 0; i < 32; i++) {
        const x = Math.floor((i + 0.5) * c.width / 32), y = Math.floor((j + 0.5) * c.height / 24);
        const k = (y * c.width + x) * 4;
        px.push([d[k], d[k + 1], d[k + 2]]);
      }
    }
    const med = [0, 1, 2].map((ch) => px.map((p) => p[ch]).sort((a, b) => a - b)[px.length >> 1]);
    const flat = px.filter((p) => p.every((v, ch) => Math.abs(v - med[ch]) <= 30)).length / px.length;
    return { rgb: med, flat, width: c.width, height: c.height };
  });
}

/// Checks that `who`'s remote video is Firefox's fake camera: a flat
/// picture (≥ 95% of the grid on one colour) whose colour is on the cycle
/// (within 40), seen twice at least 20 apart, so it is moving.
export async function checkFirefoxCanvas(page, who, what, ms = 20000) {
  const name = `${who}'s remote video shows ${what}'s camera (Firefox's flat, colour-cycling fake picture)`;
  const good = (r) => r && r.flat >= 0.95 && offCycleRgb(r.rgb) <= 40;
  let first = null, last = null;
  try {
    first = await until(`${who}'s canvas to show a flat colour of Firefox's cycle`, async () => {
      last = await flatOnCanvas(page);
      return good(last) ? last : null;
    }, ms, 250);
    const later = await until(`${who}'s flat colour to move along the cycle`, async () => {
      last = await flatOnCanvas(page);
      return good(last) && Math.max(...last.rgb.map((v, i) => Math.abs(v - first.rgb[i]))) >= 20 ? last : null;
    }, ms, 250);
    check(name, true, `${Math.round(first.flat * 100)}% flat rgb(${first.rgb}) → ${Math.round(later.flat * 100)}% flat rgb(${later.rgb}), `
      + `off the cycle by ${offCycleRgb(first.rgb).toFixed(1)} and ${offCycleRgb(later.rgb).toFixed(1)}, ${later.width}x${later.height}`);
  } catch (e) {
    check(name, false, `${e.message}; first ${JSON.stringify(first)}, last ${JSON.stringify(last)}${last ? ` off the cycle by ${offCycleRgb(last.rgb).toFixed(1)}` : ''}`);
  }
}

/// A y4m file (8-bit 4:2:0) checked frame by frame against Firefox's fake
/// camera: a frame matches when ≥ 95% of a 32x24 grid is within 12 of the
/// frame's median Y, Cb and Cr, that median Y is within 12 of 128 and its
/// (Cb, Cr) within 12 of the chroma square's edge. Also the chroma path
/// length over the frames, to show the colour moves.
export function y4mFirefox(path) {
  const buf = readFileSync(path);
  const eol = buf.indexOf(0x0a);
  const header = buf.subarray(0, eol).toString('latin1');
  const w = Number(/ W(\d+)/.exec(header)?.[1]);
  const h = Number(/ H(\d+)/.exec(header)?.[1]);
  if (!header.startsWith('YUV4MPEG2') || !w || !h) throw new Error(`${path}: not a y4m stream (${JSON.stringify(header)})`);
  const ySize = w * h, cSize = (w / 2) * (h / 2);
  const frames = [];
  let at = eol + 1;
  while (at < buf.length) {
    const fe = buf.indexOf(0x0a, at);
    if (fe < 0 || !buf.subarray(at, fe).toString('latin1').startsWith('FRAME')) break;
    const p = fe + 1;
    if (p + ySize + 2 * cSize > buf.length) break;
    const px = [];
    for (let j = 0; j < 24; j++) {
      for (let i = 0; i < 32; i++) {
        const x = Math.floor((i + 0.5) * w / 32), y = Math.floor((j + 0.5) * h / 24);
        const ci = (y >> 1) * (w / 2) + (x >> 1);
        px.push([buf[p + y * w + x], buf[p + ySize + ci], buf[p + ySize + cSize + ci]]);
      }
    }
    const med = [0, 1, 2].map((ch) => px.map((q) => q[ch]).sort((a, b) => a - b)[px.length >> 1]);
    const flat = px.filter((q) => q.every((v, ch) => Math.abs(v - med[ch]) <= 12)).length / px.length;
    const off = offCycleYuv(...med);
    frames.push({ yuv: med, flat, ok: flat >= 0.95 && off.luma <= 12 && off.edge <= 12 });
    at = p + ySize + 2 * cSize;
  }
  let moved = 0;
  for (let i = 1; i < frames.length; i++) {
    moved += Math.abs(frames[i].yuv[1] - frames[i - 1].yuv[1]) + Math.abs(frames[i].yuv[2] - frames[i - 1].yuv[2]);
  }
  return { width: w, height: h, frames: frames.length, matching: frames.filter((f) => f.ok).length, moved, sample: frames.filter((_, i) => i % 60 === 0).map((f) => f.yuv) };
}

/// A 16-bit PCM WAV file's samples (first channel) as floats, and its rate.
export function wavSamples(path) {
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
  const n = Math.floor(data.length / 2 / channels);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = data.readInt16LE(i * 2 * channels) / 32768;
  return { rate, samples: out };
}

/// The share of a signal's power at `hz` (Goertzel), per sample.
export function powerAt(samples, rate, hz) {
  const k = 2 * Math.cos((2 * Math.PI * hz) / rate);
  let s1 = 0, s2 = 0;
  for (const x of samples) { const s0 = x + k * s1 - s2; s2 = s1; s1 = s0; }
  return (s1 * s1 + s2 * s2 - k * s1 * s2) / (samples.length * samples.length);
}
