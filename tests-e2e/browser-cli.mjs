// Headless Chromium and the `one2one` command line call each other through
// one2one-server, both ways: each side must decode the other's media, and
// Chromium's canvas must show the client's moving colour bars.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { check, summary, startServer, launchBrowser, openClient, waitState, inbound, until, ROOT, IP } from './lib.mjs';

const CLIENT = process.env.ONE2ONE_CLIENT_BIN || join(ROOT, 'target/debug/one2one');
// The client's test pattern bars (media/src/pattern.rs BARS).
const BARS = [[192, 192, 192], [192, 192, 0], [0, 192, 192], [0, 192, 0], [192, 0, 192], [192, 0, 0], [0, 0, 192], [16, 16, 16]];

function startClient(server, args) {
  const proc = spawn(CLIENT, ['--server', server.wsUrl, '--insecure', '--headless', '--media-ip', IP, ...args], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const events = [];
  createInterface({ input: proc.stdout }).on('line', (l) => {
    try { events.push(JSON.parse(l)); } catch { console.log(`[one2one] ${l}`); }
  });
  const exited = new Promise((r) => proc.on('exit', (code, sig) => { console.log(`[${args[0]} ${args[1]}] exited ${code ?? sig} at ${Date.now() % 100000}`); r(code ?? sig); }));
  return {
    proc, events, exited,
    event: (name, ms = 20000) => until(`one2one event ${name}`, () => events.find((e) => e.event === name), ms),
    lastStats: () => [...events].reverse().find((e) => e.event === 'stats')?.stats,
  };
}

/// Samples the remote video through a canvas: the share of points on a row
/// in the bar area that show one of the bar colours, and how many bars.
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
        const x = Math.floor((i + 0.5) * c.width / 64), y = Math.floor(c.height * fy);
        const [r, gg, b] = g.getImageData(x, y, 1, 1).data;
        total++;
        const k = bars.findIndex(([br, bg, bb]) => Math.max(Math.abs(br - r), Math.abs(bg - gg), Math.abs(bb - b)) <= 40);
        if (k >= 0) { good++; seen.add(k); }
      }
    }
    return { share: good / total, distinct: seen.size, width: c.width, height: c.height };
  }, BARS);
}

async function checkCanvas(page, who) {
  try {
    const r = await until(`${who}'s canvas to show the colour bars`, async () => {
      const r = await barsOnCanvas(page);
      return r && r.share >= 0.8 && r.distinct >= 7 ? r : null;
    }, 20000, 250);
    check(`${who}'s canvas shows the client's colour bars`, true, `${Math.round(r.share * 100)}% of samples on ${r.distinct} bars, ${r.width}x${r.height}`);
  } catch (e) {
    check(`${who}'s canvas shows the client's colour bars`, false, `${e.message} ${JSON.stringify(await barsOnCanvas(page))}`);
  }
}

async function checkClientDecodes(client, who) {
  try {
    const s = await until(`${who} to decode 60 frames at 640x480 and audio`, () => {
      const s = client.lastStats();
      return s && s.frames_decoded >= 60 && s.width === 640 && s.height === 480 && s.audio_packets > 0 ? s : null;
    }, 30000, 250);
    check(`${who} decodes Chromium's camera and receives its audio`, true,
      `${s.frames_decoded} frames ${s.width}x${s.height} at ${s.video_fps.toFixed(1)} fps, ${s.audio_packets} audio packets, level ${s.audio_level.toFixed(3)}`);
  } catch (e) {
    check(`${who} decodes Chromium's camera and receives its audio`, false, `${e.message} last stats ${JSON.stringify(client.lastStats())}`);
  }
}

const server = await startServer(18444);
let context;
const clients = [];
let code = 1;
try {
  context = await launchBrowser();

  // Chromium calls a headless client that auto-answers.
  const carol = startClient(server, ['register', 'carol', '--auto-answer', 'accept']);
  clients.push(carol);
  await carol.event('registered');
  const bob = await openClient(context, server.url, 'bob');
  await bob.evaluate(() => window.one2one.call('carol'));
  await waitState(bob, 'incall', 30000);
  await carol.event('call_started');
  check('Chromium → one2one: the call starts', true);
  await checkClientDecodes(carol, 'carol');
  await checkCanvas(bob, 'bob');
  const s = await inbound(bob);
  check('bob receives carol\'s audio', s && s.audioPackets > 0, JSON.stringify(s));
  await bob.evaluate(() => window.one2one.hangup());
  await carol.event('call_ended');
  await waitState(bob, 'idle');
  check('Chromium hangs up and carol sees the end', true);
  carol.proc.stdin.end('quit\n');

  // The client calls a page that auto-answers.
  const dave = await openClient(context, server.url, 'dave');
  await dave.evaluate(() => { window.one2one.autoAnswer = true; });
  const erin = startClient(server, ['call', 'dave', '--as', 'erin', '--hangup-after', '8']);
  clients.push(erin);
  await erin.event('call_started', 30000);
  await waitState(dave, 'incall', 30000);
  check('one2one → Chromium: the call starts', true);
  await checkClientDecodes(erin, 'erin');
  await checkCanvas(dave, 'dave');
  const ended = await erin.event('call_ended', 30000);
  check('erin hangs up after --hangup-after', ended.reason === 'hung_up', JSON.stringify(ended));
  const erinCode = await erin.exited;
  check('erin exits with 0', erinCode === 0, `exit code ${erinCode}`);
  await waitState(dave, 'idle');
  check('dave\'s page sees the call end', true);
  const lat = erin.events.filter((e) => e.event === 'stats').map((e) => e.stats.glass_to_glass_ms);
  console.log(`erin glass-to-glass (only set when the remote sends the test pattern): ${JSON.stringify(lat)}`);
  code = summary();
} catch (e) {
  check('browser ↔ client calls', false, e.stack || String(e));
  code = summary();
} finally {
  for (const c of clients) c.proc.kill('SIGKILL');
  if (context) await context.close().catch(() => {});
  server.stop();
}
process.exit(code);
