// Shared pieces of the browser tests: the server as a child process,
// headless Debian Chromium with a fake camera and microphone, and checks
// that count passes and failures.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
export const IP = process.env.ONE2ONE_TEST_IP || '10.77.0.1';
export const CHROMIUM = '/usr/bin/chromium';

let passed = 0;
let failed = 0;
export function check(name, ok, detail = '') {
  if (ok) passed++; else failed++;
  console.log(`${ok ? 'PASS' : 'FAIL'} ${name}${detail ? ': ' + detail : ''}`);
}
export function summary() {
  console.log(`${passed} passed, ${failed} failed`);
  return failed === 0 && passed > 0 ? 0 : 1;
}

export async function until(what, fn, ms = 20000, every = 100) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    try { last = await fn(); if (last) return last; } catch (e) { last = e; }
    await new Promise((r) => setTimeout(r, every));
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${last})`);
}

/// Starts one2one-server on IP:port and waits for /healthz. With `--http`
/// in `extra` the URLs are http:// and ws://. ONE2ONE_WEB_ROOT (e.g.
/// server/static) serves the page from that folder instead of the copy
/// compiled in, to try page changes without rebuilding.
export async function startServer(port, extra = []) {
  const bin = process.env.ONE2ONE_SERVER_BIN || join(ROOT, 'target/debug/one2one-server');
  if (!existsSync(bin)) throw new Error(`${bin} is missing: run cargo build -p one2one-server`);
  const webRoot = process.env.ONE2ONE_WEB_ROOT ? ['--web-root', process.env.ONE2ONE_WEB_ROOT] : [];
  const proc = spawn(bin, ['--listen', `${IP}:${port}`, '--media-ip', IP, ...webRoot, ...extra], {
    stdio: ['ignore', 'inherit', 'inherit'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn,one2one_server=info' },
  });
  const http = extra.includes('--http');
  const url = `${http ? 'http' : 'https'}://${IP}:${port}`;
  await until('the server to answer /healthz', async () => {
    if (proc.exitCode !== null) throw new Error(`one2one-server exited with ${proc.exitCode}`);
    const { execFileSync } = await import('node:child_process');
    try {
      return execFileSync('curl', ['-sk', `${url}/healthz`], { encoding: 'utf8' }).trim() === 'ok';
    } catch { return false; }
  }, 20000, 100);
  const exited = new Promise((r) => { if (proc.exitCode !== null) r(proc.exitCode); else proc.on('exit', (c, sig) => r(c ?? sig)); });
  return { proc, url, exited, wsUrl: `${http ? 'ws' : 'wss'}://${IP}:${port}/one2one`, stop: () => proc.kill('SIGTERM') };
}

/// Headless Chromium with a fake camera and microphone, every permission
/// prompt answered yes. Options, for pages that must miss something:
///   fakeDevices: the value of --use-fake-device-for-media-stream
///     ('device-count=0': no camera, the fake microphone still there);
///   fakeUi: false leaves out --use-fake-ui-for-media-stream, so only
///     what `permissions` grants (e.g. ['microphone']) is allowed;
///   permissions, origin: granted with context.grantPermissions.
export async function launchBrowser({ fakeDevices = '', fakeUi = true, permissions = null, origin } = {}) {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} not found: apt-get install chromium (scripts/install-deps --test does it)`);
  }
  const userDataDir = mkdtempSync(join(tmpdir(), 'one2one-chromium-'));
  const args = [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ...(fakeUi ? ['--use-fake-ui-for-media-stream'] : []),
    fakeDevices ? `--use-fake-device-for-media-stream=${fakeDevices}` : '--use-fake-device-for-media-stream',
    '--disable-features=WebRtcHideLocalIpsWithMdns', '--ignore-certificate-errors',
    '--autoplay-policy=no-user-gesture-required',
  ];
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM, headless: true, args, ignoreHTTPSErrors: true,
  });
  if (permissions) await context.grantPermissions(permissions, origin ? { origin } : undefined);
  return context;
}

/// A page of the web client, registered as `name`.
export async function openClient(context, url, name) {
  const page = await context.newPage();
  page.on('pageerror', (e) => console.log(`[${name}] page error: ${e.message}`));
  // A fresh namespace can still be settling; Chromium then reports a network change once.
  await until(`${url} to load`, () => page.goto(url).then(() => true, (e) => {
    if (!/ERR_NETWORK_CHANGED/.test(e.message)) throw e;
    return false;
  }), 20000, 200);
  await page.waitForFunction(() => window.one2one !== undefined, null, { timeout: 20000 });
  if (name) {
    await page.evaluate((n) => window.one2one.register(n), name);
    await page.waitForFunction(() => window.one2one.state === 'idle', null, { timeout: 20000 });
  }
  return page;
}

export async function waitState(page, state, ms = 20000) {
  await page.waitForFunction((s) => window.one2one.state === s, state, { timeout: ms });
}

/// Inbound video frames decoded and audio packets received, from getStats().
export async function inbound(page) {
  return page.evaluate(async () => {
    const pc = window.one2one.pc;
    if (!pc) return null;
    const out = { framesDecoded: 0, audioPackets: 0, width: 0, height: 0 };
    (await pc.getStats()).forEach((r) => {
      if (r.type !== 'inbound-rtp') return;
      if (r.kind === 'video') { out.framesDecoded = r.framesDecoded || 0; out.width = r.frameWidth || 0; out.height = r.frameHeight || 0; }
      if (r.kind === 'audio') out.audioPackets = r.packetsReceived || 0;
    });
    return out;
  });
}
