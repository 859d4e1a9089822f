// one2one-server's --media kurento, on a KMS that is another one2one-server's
// --kms-listen: server A (the web client, HTTPS as in the other browser
// tests) puts each call on a pipeline of server B. Two Chromium pages on A
// call each other and decode each other's media (getStats, growing; the
// remote video is the other page's camera); then the `one2one` client on A
// calls a page on A and its --record-remote recording carries the page's
// camera (and the page shows the client's colour bars). B's /metrics
// shows each pipeline while its call lasts and none after it.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { mkdtempSync, existsSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { check, summary, startServer, launchBrowser, openClient, waitState, until, IP } from './lib.mjs';
import {
  requireParts, tcpOpen, checkMediaFlows, checkGreenCanvas, checkBarsCanvas, checkGauges, y4mGreen, wavLevel, CLIENT_BIN,
} from './kurento-lib.mjs';

const A_PORT = 18490;
const B_PORT = 18491;
const KMS_PORT = 18492;
const NO_PIPELINE = { one2one_kms_pipelines: 0, one2one_kms_endpoints: 0 };
const ONE_PIPELINE = { one2one_kms_pipelines: 1, one2one_kms_endpoints: 2 };
// A's series for its one --kms-uri.
const KMS = (name) => `${name}{uri="ws://${IP}:${KMS_PORT}/kurento"}`;
const A_CALLS = (n) => ({ [KMS('one2one_kms_up')]: 1, [KMS('one2one_kms_active_calls')]: n });

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

const servers = [];
let context;
let client;
let recDir;
let code = 1;
try {
  requireParts({ serverFlags: ['--kms-listen', '--media', '--kms-uri'], client: true });
  const b = await startServer(B_PORT, ['--http', '--kms-listen', `${IP}:${KMS_PORT}`]);
  servers.push(b);
  await tcpOpen(IP, KMS_PORT, `one2one-server's --kms-listen ws://${IP}:${KMS_PORT}/kurento`);
  const a = await startServer(A_PORT, ['--media', 'kurento', '--kms-uri', `ws://${IP}:${KMS_PORT}/kurento`]);
  servers.push(a);
  check('server A runs --media kurento on server B\'s --kms-listen', true, `${a.url} → ws://${IP}:${KMS_PORT}/kurento`);
  context = await launchBrowser();

  // Page to page on A.
  const alice = await openClient(context, a.url, 'alice');
  const bob = await openClient(context, a.url, 'bob');
  await alice.evaluate(() => window.one2one.call('bob'));
  await waitState(bob, 'incoming');
  await bob.evaluate(() => window.one2one.accept());
  await waitState(alice, 'incall', 30000);
  await waitState(bob, 'incall', 30000);
  check('alice calls bob on A, bob accepts, both pages are in the call', true);
  await checkGauges(b.url, ONE_PIPELINE, 'the call is a pipeline with two endpoints on B');
  await checkGauges(a.url, A_CALLS(1), 'A\'s /metrics shows its KMS up with one active call');
  await checkMediaFlows(alice, 'alice', 'bob');
  await checkMediaFlows(bob, 'bob', 'alice');
  await checkGreenCanvas(alice, 'alice', 'bob');
  await checkGreenCanvas(bob, 'bob', 'alice');
  await bob.evaluate(() => window.one2one.hangup());
  await waitState(alice, 'idle');
  await waitState(bob, 'idle');
  check('after bob hangs up both pages are idle', true);
  await checkGauges(b.url, NO_PIPELINE, 'after the hang-up A released the pipeline on B');
  await alice.close();
  await bob.close();

  // The one2one client calls a page on A that auto-answers, recording what it gets.
  const dave = await openClient(context, a.url, 'dave');
  await dave.evaluate(() => { window.one2one.autoAnswer = true; });
  recDir = mkdtempSync(join(tmpdir(), 'one2one-kurento-'));
  const rec = join(recDir, 'dave');
  client = startClient(a, ['--record-remote', rec, 'call', 'dave', '--as', 'erin', '--hangup-after', '10']);
  await client.event('call_started', 30000);
  await waitState(dave, 'incall', 30000);
  check('one2one (erin) calls dave\'s page on A: the call starts', true);
  await checkGauges(b.url, ONE_PIPELINE, 'erin\'s call is a pipeline with two endpoints on B');
  try {
    const s = await until('erin to decode 60 frames at 640x480 and audio', () => {
      const s = client.lastStats();
      return s && s.frames_decoded >= 60 && s.width === 640 && s.height === 480 && s.audio_packets > 0 ? s : null;
    }, 30000, 250);
    check('erin decodes dave\'s camera and receives his audio', true,
      `${s.frames_decoded} frames ${s.width}x${s.height} at ${s.video_fps.toFixed(1)} fps, ${s.audio_packets} audio packets`);
  } catch (e) {
    check('erin decodes dave\'s camera and receives his audio', false, `${e.message} last stats ${JSON.stringify(client.lastStats())}`);
  }
  await checkMediaFlows(dave, 'dave', 'erin');
  await checkBarsCanvas(dave, 'dave', 'erin');
  const ended = await client.event('call_ended', 30000);
  check('erin hangs up after --hangup-after', ended.reason === 'hung_up', JSON.stringify(ended));
  const exitCode = await client.exited;
  check('erin exits with 0', exitCode === 0, `exit code ${exitCode}`);
  await waitState(dave, 'idle');
  await checkGauges(b.url, NO_PIPELINE, 'after erin hangs up A released the pipeline on B');
  await checkGauges(a.url, { ...A_CALLS(0), [KMS('one2one_kms_request_errors_total')]: 0 },
    'A\'s /metrics shows its KMS up, no active call and no request error');
  await checkGauges(b.url, { one2one_kms_errors_total: 0 }, 'B answered none of A\'s requests with an error');

  // What erin recorded is dave's camera: Chromium's green picture.
  try {
    if (!existsSync(`${rec}.y4m`)) throw new Error(`${rec}.y4m was not written`);
    const v = y4mGreen(`${rec}.y4m`);
    const green = v.shares.filter((s) => s >= 0.8).length;
    check('erin\'s recording is dave\'s camera: 640x480, most frames Chromium\'s green picture',
      v.width === 640 && v.height === 480 && v.frames >= 60 && green >= v.frames * 0.8,
      `${v.width}x${v.height}, ${v.frames} frames, ${green} of them at least 80% green (median ${v.shares.slice().sort((x, y) => x - y)[v.frames >> 1]?.toFixed(2)})`);
    const w = wavLevel(`${rec}.wav`);
    check('erin\'s recording has dave\'s audio', w.seconds >= 2 && w.rms > 0.001,
      `${w.seconds.toFixed(1)} s at ${w.rate} Hz, RMS ${w.rms.toFixed(4)}`);
  } catch (e) {
    check('erin\'s recording', false, e.stack || String(e));
  }
  code = summary();
} catch (e) {
  check('calls through --media kurento', false, e.stack || String(e));
  code = summary();
} finally {
  if (client) client.proc.kill('SIGKILL');
  if (context) await context.close().catch(() => {});
  for (const s of servers.reverse()) s.stop();
  if (recDir) rmSync(recDir, { recursive: true, force: true }); // the recording: about 130 MB
}
process.exit(code);
