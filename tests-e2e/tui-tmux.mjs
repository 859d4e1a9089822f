// The TUI in a real terminal (tmux), called by headless Chromium: the
// prompt shows, `a` accepts, the pane shows the call and Chromium's camera
// as truecolor half-block cells, `h` hangs up (the page sees it end), and
// `q` quits with the terminal restored.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { check, summary, startServer, launchBrowser, openClient, waitState, until, ROOT, IP } from './lib.mjs';

const CLIENT = process.env.ONE2ONE_CLIENT_BIN || join(ROOT, 'target/debug/one2one');
const SESSION = `one2one-${process.pid}`;
const STATUS = join(mkdtempSync(join(tmpdir(), 'one2one-tmux-')), 'status');
const tmux = (...args) => execFileSync('tmux', args, { encoding: 'utf8' });
const pane = (escapes = false) => tmux('capture-pane', '-p', ...(escapes ? ['-e'] : []), '-t', SESSION);
const waitPane = (what, test, ms = 20000) => until(`the pane to show ${what}`, () => test(pane()), ms, 100);

/// Walks a `capture-pane -e` dump cell by cell: for every half-block cell
/// (`▀`) with truecolor foreground and background, counts both colours, and
/// how many are within 48 of `rgb`.
function cellColours(dump, rgb) {
  let fg = null, bg = null, n = 0, near = 0;
  const close = (c) => c && Math.max(...c.map((v, i) => Math.abs(v - rgb[i]))) <= 48;
  for (const m of dump.matchAll(/\x1b\[([\d;]*)m|▀/g)) {
    if (m[0] === '▀') {
      for (const c of [fg, bg]) if (c) { n++; if (close(c)) near++; }
      continue;
    }
    const p = (m[1] || '0').split(';').map(Number);
    for (let i = 0; i < p.length; i++) {
      if (p[i] === 0) { fg = bg = null; }
      else if (p[i] === 39) fg = null;
      else if (p[i] === 49) bg = null;
      else if ((p[i] === 38 || p[i] === 48) && p[i + 1] === 2) {
        const c = p.slice(i + 2, i + 5);
        if (p[i] === 38) fg = c; else bg = c;
        i += 4;
      } else if ((p[i] === 38 || p[i] === 48) && p[i + 1] === 5) {
        if (p[i] === 38) fg = null; else bg = null;
        i += 2;
      }
    }
  }
  return { n, near, share: n ? near / n : 0 };
}

const server = await startServer(18445);
let context;
let code = 1;
try {
  try { execFileSync('tmux', ['-V']); } catch { throw new Error('tmux is missing: apt-get install tmux'); }
  // The pane runs a shell that records one2one's exit status in a file:
  // tmux sometimes leaves the exited client a zombie for many seconds
  // before it marks the pane dead, so the pane is not the witness.
  tmux('new-session', '-d', '-s', SESSION, '-x', '120', '-y', '36',
    `${CLIENT} --server ${server.wsUrl} --insecure --media-ip ${IP} register alice --video test --audio tone; echo $? > ${STATUS}`);
  tmux('set-option', '-t', SESSION, 'remain-on-exit', 'on');
  await waitPane('alice online', (p) => p.includes('You are alice.') && p.includes('● online'));
  check('the TUI shows alice online', true);

  context = await launchBrowser();
  const bob = await openClient(context, server.url, 'bob');
  await bob.evaluate(() => window.one2one.call('alice'));
  await waitPane('the incoming-call prompt', (p) => p.includes('bob is calling: [a]ccept / [r]eject'));
  check('the pane shows the prompt', true);
  tmux('send-keys', '-t', SESSION, 'a');
  await waitPane('the call', (p) => / bob {2}\d\d:\d\d {2}mic /.test(p));
  await waitState(bob, 'incall', 20000);
  check('a accepts: the pane shows the call with bob', true);

  // Chromium's own camera, as the page shows it.
  const camera = await until('bob\'s camera preview', () => bob.evaluate(() => {
    const v = document.querySelector('#local');
    if (!v || !v.videoWidth) return null;
    const c = document.createElement('canvas');
    c.width = 64; c.height = 48;
    const g = c.getContext('2d');
    g.drawImage(v, 0, 0, 64, 48);
    const d = g.getImageData(0, 0, 64, 48).data;
    const sum = [0, 0, 0];
    for (let i = 0; i < d.length; i += 4) { sum[0] += d[i]; sum[1] += d[i + 1]; sum[2] += d[i + 2]; }
    return sum.map((s) => Math.round(s / (d.length / 4)));
  }));
  try {
    const seen = await until('half-block cells like the camera', () => {
      // Most cells show the camera; the self view in the corner does not.
      const c = cellColours(pane(true), camera);
      return c.n >= 2000 && c.share >= 0.6 ? c : null;
    }, 20000, 250);
    check('the pane draws Chromium\'s camera in truecolor half-blocks', true,
      `${seen.near} of ${seen.n} cell colours within 48 of the camera's mean colour ${camera}`);
  } catch (e) {
    const c = cellColours(pane(true), camera);
    check('the pane draws Chromium\'s camera in truecolor half-blocks', false, `${e.message}; cells ${JSON.stringify(c)} camera ${camera}`);
  }

  tmux('send-keys', '-t', SESSION, 'h');
  await waitState(bob, 'idle', 20000);
  await waitPane('the end of the call', (p) => p.includes('you ended the call with bob') && p.includes('You are alice.'));
  check('h hangs up: the page sees the call end', true);

  tmux('send-keys', '-t', SESSION, 'q');
  const status = await until('one2one to exit', () => {
    const st = existsSync(STATUS) ? readFileSync(STATUS, 'utf8').trim() : '';
    return st !== '' ? st : null;
  });
  const after = pane();
  const alt = tmux('display-message', '-p', '-t', SESSION, '#{alternate_on}').trim();
  check('q quits with status 0 and the terminal restored', status === '0' && alt === '0' && !after.includes('You are alice.'),
    `status ${status}, alternate screen ${alt}`);
  code = summary();
} catch (e) {
  check('TUI in tmux', false, e.stack || String(e));
  try { console.log(pane()); } catch { /* no pane */ }
  code = summary();
} finally {
  try { tmux('kill-session', '-t', SESSION); } catch { /* gone */ }
  if (context) await context.close().catch(() => {});
  server.stop();
}
process.exit(code);
