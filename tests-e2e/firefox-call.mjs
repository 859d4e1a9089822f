// Debian's firefox-esr (headless, WebDriver BiDi through puppeteer-core)
// against one2one-server's embedded relay, over HTTPS with the server's
// self-signed certificate:
//   1. a Firefox page and a headless Chromium page call each other, each
//      way: both decode the other's video and keep receiving its audio
//      (getStats), Firefox shows Chromium's green fake camera and Chromium
//      shows Firefox's flat, colour-cycling fake camera;
//   2. a Firefox page and the `one2one --headless` client call each other,
//      each way: the client decodes Firefox's video and audio, and its
//      --record-remote recording is Firefox's camera (flat frames, Y 128,
//      chroma on the edge of the square, moving) and its 1 kHz tone; the
//      page decodes the client's media and shows its colour bars.
// One Firefox for the whole test; Chromium only for part 1.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { check, summary, startServer, launchBrowser, openClient, waitState, until, IP } from './lib.mjs';
import { checkMediaFlows, checkGreenCanvas, checkBarsCanvas, CLIENT_BIN } from './kurento-lib.mjs';
import {
  requireFirefox, launchFirefox, openFirefoxClient, fxWaitState, checkFirefoxCanvas, y4mFirefox, wavSamples, powerAt, FAKE_TONE_HZ,
} from './firefox-lib.mjs';

const t0 = Date.now();
const secs = () => `${((Date.now() - t0) / 1000).toFixed(1)} s`;

function startClient(server, args) {
  const proc = spawn(CLIENT_BIN, ['--server', server.wsUrl, '--insecure', '--headless', '--media-ip', IP, ...args], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const events = [];
  createInterface({ input: proc.stdout }).on('line', (l) => {
    try { events.push(JSON.parse(l)); } catch { console.log(`[one2one] ${l}`); }
  });
  const exited = new Promise((r) => proc.on('exit', (c, sig) => r(c ?? sig)));
  return {
    proc, events, exited,
    event: (name, ms = 20000) => until(`one2one event ${name}`, () => events.find((e) => e.event === name), ms),
    lastStats: () => [...events].reverse().find((e) => e.event === 'stats')?.stats,
  };
}

/// Resolves with the promise's value, or with `late` after `ms`.
function within(promise, ms, late) {
  let timer;
  return Promise.race([promise, new Promise((r) => { timer = setTimeout(() => r(late), ms); })]).finally(() => clearTimeout(timer));
}

/// The client decodes 60 frames of Firefox's camera at its 640x480 (kept by
/// media.peerconnection.video.lock_scaling) and gets its audio.
async function checkClientDecodes(client, who) {
  const name = `${who} decodes the Firefox page's camera and receives its audio`;
  try {
    const s = await until(`${who} to decode 60 frames at 640x480 and audio`, () => {
      const s = client.lastStats();
      return s && s.frames_decoded >= 60 && s.width === 640 && s.height === 480 && s.audio_packets > 0 ? s : null;
    }, 30000, 250);
    check(name, true, `${s.frames_decoded} frames ${s.width}x${s.height} at ${s.video_fps.toFixed(1)} fps, `
      + `${s.audio_packets} audio packets, level ${s.audio_level.toFixed(3)}`);
  } catch (e) {
    check(name, false, `${e.message} last stats ${JSON.stringify(client.lastStats())}`);
  }
}

/// The client's --record-remote recording is Firefox's fake camera and tone.
function checkRecording(rec, who) {
  try {
    if (!existsSync(`${rec}.y4m`)) throw new Error(`${rec}.y4m was not written`);
    const v = y4mFirefox(`${rec}.y4m`);
    check(`${who}'s recording is Firefox's camera: most frames one flat colour, Y near 128, chroma on the square's edge, moving`,
      v.width === 640 && v.height === 480 && v.frames >= 60 && v.matching >= v.frames * 0.8 && v.moved >= v.frames / 2,
      `${v.width}x${v.height}, ${v.matching} of ${v.frames} frames match, chroma moved ${v.moved} steps; `
      + `Y,Cb,Cr every 60 frames: ${v.sample.map((s) => s.join(',')).join(' ')}`);
    const { rate, samples } = wavSamples(`${rec}.wav`);
    let sum = 0;
    for (const x of samples) sum += x * x;
    const rms = Math.sqrt(sum / Math.max(1, samples.length));
    const tone = powerAt(samples, rate, FAKE_TONE_HZ);
    const others = [440, 700, 1300, 2000, 3000].map((hz) => powerAt(samples, rate, hz));
    const ratio = tone / Math.max(...others, 1e-12);
    check(`${who}'s recording has Firefox's ${FAKE_TONE_HZ} Hz tone`,
      samples.length >= rate * 2 && rms > 0.001 && ratio >= 20,
      `${(samples.length / rate).toFixed(1)} s at ${rate} Hz, RMS ${rms.toFixed(4)}, `
      + `power at ${FAKE_TONE_HZ} Hz ${ratio.toFixed(0)}× the most at 440/700/1300/2000/3000 Hz`);
  } catch (e) {
    check(`${who}'s recording`, false, e.stack || String(e));
  }
}

const server = await startServer(18460);
let firefox;
let chromium;
let dir;
const clients = [];
let code = 1;
try {
  requireFirefox();
  if (!existsSync(CLIENT_BIN)) throw new Error(`${CLIENT_BIN} is missing: run cargo build -p one2one`);
  firefox = await launchFirefox();
  check('firefox-esr runs headless over WebDriver BiDi', true, `${await firefox.version()} in ${secs()}`);
  chromium = await launchBrowser();

  // 1. Firefox ↔ Chromium, each way.
  const fiona = await openFirefoxClient(firefox, server.url, 'fiona');
  const chris = await openClient(chromium, server.url, 'chris');
  check('the Firefox page (fiona) and the Chromium page (chris) registered', true, secs());
  for (const [caller, callee] of [['fiona', 'chris'], ['chris', 'fiona']]) {
    const start = Date.now();
    const pageOf = { fiona, chris };
    const wait = (who, s, ms) => (who === 'fiona' ? fxWaitState(fiona, s, ms) : waitState(chris, s, ms));
    await pageOf[caller].evaluate((p) => window.one2one.call(p), callee);
    await wait(callee, 'incoming');
    await pageOf[callee].evaluate(() => window.one2one.accept());
    await wait(caller, 'incall', 30000);
    await wait(callee, 'incall', 30000);
    check(`${caller} calls ${callee}, ${callee} accepts: both pages are in the call`, true, `${Date.now() - start} ms`);
    await checkMediaFlows(fiona, 'fiona (Firefox)', 'chris');
    await checkMediaFlows(chris, 'chris (Chromium)', 'fiona');
    await checkGreenCanvas(fiona, 'fiona (Firefox)', 'chris');
    await checkFirefoxCanvas(chris, 'chris (Chromium)', 'fiona');
    await pageOf[caller].evaluate(() => window.one2one.hangup());
    await wait('fiona', 'idle');
    await wait('chris', 'idle');
    check(`${caller} hangs up: both pages are idle, no peer connection left`,
      await fiona.evaluate(() => window.one2one.pc === null) && await chris.evaluate(() => window.one2one.pc === null), secs());
  }
  await chromium.close();
  chromium = null;

  // 2a. Firefox calls a headless client that auto-answers and records.
  dir = mkdtempSync(join(tmpdir(), 'one2one-firefox-'));
  const recCarol = join(dir, 'carol');
  const carol = startClient(server, ['--record-remote', recCarol, 'register', 'carol', '--auto-answer', 'accept']);
  clients.push(carol);
  await carol.event('registered');
  await fiona.evaluate(() => window.one2one.call('carol'));
  await fxWaitState(fiona, 'incall', 30000);
  await carol.event('call_started', 30000);
  check('Firefox → one2one: fiona calls carol, the call starts', true, secs());
  await checkClientDecodes(carol, 'carol');
  await checkMediaFlows(fiona, 'fiona (Firefox)', 'carol');
  await checkBarsCanvas(fiona, 'fiona (Firefox)', 'carol');
  await fiona.evaluate(() => window.one2one.hangup());
  const carolEnd = await carol.event('call_ended');
  await fxWaitState(fiona, 'idle');
  check('fiona hangs up and carol sees the end', carolEnd.reason === 'remote_hung_up', JSON.stringify(carolEnd));
  carol.proc.stdin.end('quit\n');
  const carolCode = await within(carol.exited, 10000, 'still running after 10 s');
  check('carol quits with 0', carolCode === 0, `exit code ${carolCode}`);
  checkRecording(recCarol, 'carol');

  // 2b. A headless client calls the Firefox page, which auto-answers.
  await fiona.evaluate(() => { window.one2one.autoAnswer = true; });
  const recErin = join(dir, 'erin');
  const erin = startClient(server, ['--record-remote', recErin, 'call', 'fiona', '--as', 'erin', '--hangup-after', '10']);
  clients.push(erin);
  await erin.event('call_started', 30000);
  await fxWaitState(fiona, 'incall', 30000);
  check('one2one → Firefox: erin calls fiona, the page answers, the call starts', true, secs());
  await checkClientDecodes(erin, 'erin');
  await checkMediaFlows(fiona, 'fiona (Firefox)', 'erin');
  await checkBarsCanvas(fiona, 'fiona (Firefox)', 'erin');
  const erinEnd = await erin.event('call_ended', 30000);
  check('erin hangs up after --hangup-after', erinEnd.reason === 'hung_up', JSON.stringify(erinEnd));
  const erinCode = await erin.exited;
  check('erin exits with 0', erinCode === 0, `exit code ${erinCode}`);
  await fxWaitState(fiona, 'idle');
  check('fiona\'s page sees the call end', await fiona.evaluate(() => window.one2one.pc === null), secs());
  checkRecording(recErin, 'erin');
  code = summary();
} catch (e) {
  check('Firefox calls', false, e.stack || String(e));
  code = summary();
} finally {
  for (const c of clients) c.proc.kill('SIGKILL');
  if (chromium) await chromium.close().catch(() => {});
  if (firefox) await firefox.close().catch(() => {});
  server.stop();
  if (dir) rmSync(dir, { recursive: true, force: true }); // the recordings: about 140 MB
  console.log(`firefox-call took ${secs()}`);
}
process.exit(code);
