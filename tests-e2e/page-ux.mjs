// The web page as a person meets it, in headless Chromium against the real
// server: state words on the badge, call outcomes shown as outcomes (not
// red errors), "In a call" only once the peer connection is connected, the
// incoming-call dialog's focus and keys, focus after registering, the self
// view on a phone-sized screen, the shutdown message kept after the socket
// closes; a callee without a camera joins audio-only, a blocked camera says
// what to do, plain HTTP says HTTPS is needed, and a message the server
// refuses as too large shows the server's words.
import { check, summary, startServer, launchBrowser, openClient, waitState, inbound, until } from './lib.mjs';

const RING_TIMEOUT = 5; // seconds, for the no-answer case
const HTTPS_NEEDED = 'Camera and microphone need HTTPS: this page was opened over plain http://, '
  + 'so the browser does not offer them. Open it with https:// instead';
const ALLOW = '(the camera icon in the address bar, or the site settings), then call again';

// Every page records its states (with the badge's words and the peer
// connection's state at that moment) and every change of the status line.
function recorder() {
  window.__states = [];
  window.__status = [];
  const start = () => {
    const badge = document.getElementById('status-state');
    const note = document.getElementById('status-note');
    const err = document.getElementById('status-error');
    const snap = () => ({ note: note.hidden ? '' : note.textContent, error: err.hidden ? '' : err.textContent });
    new MutationObserver(() => {
      const st = document.body.dataset.state;
      const last = window.__states[window.__states.length - 1];
      if (!last || last.state !== st) {
        const pc = window.one2one && window.one2one.pc;
        window.__states.push({ state: st, badge: badge.textContent, conn: pc ? pc.connectionState : null, t: performance.now() });
      }
    }).observe(document.body, { attributes: true, attributeFilter: ['data-state'] });
    new MutationObserver(() => {
      const s = snap();
      const last = window.__status[window.__status.length - 1];
      if (!last || last.note !== s.note || last.error !== s.error) window.__status.push({ ...s, t: performance.now() });
    }).observe(document.getElementById('status'), { attributes: true, childList: true, characterData: true, subtree: true });
  };
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start); else start();
}

const text = (page, sel) => page.$eval(sel, (e) => (e.hidden ? '' : e.textContent));
const focused = (page) => page.evaluate(() => document.activeElement && document.activeElement.id);
const states = (page) => page.evaluate(() => window.__states);

async function step(name, fn) {
  try { await fn(); } catch (e) { check(name, false, e.stack || String(e)); }
}

async function expectText(page, sel, want, name, ms = 10000) {
  try {
    await page.waitForFunction(([s, w]) => { const e = document.querySelector(s); return e && !e.hidden && e.textContent === w; }, [sel, want], { timeout: ms });
    check(name, true, JSON.stringify(want));
  } catch {
    check(name, false, `${sel} is ${JSON.stringify(await text(page, sel))}, want ${JSON.stringify(want)}`);
  }
}

async function expectNoError(page, name) {
  const e = await text(page, '#status-error');
  check(name, e === '', e ? `status error ${JSON.stringify(e)}` : '');
}

async function newClient(context, url, name) {
  const page = await openClient(context, url, null);
  if (name) {
    await page.evaluate((n) => window.one2one.register(n), name);
    await waitState(page, 'idle');
  }
  return page;
}

const servers = [];
const contexts = [];
let code = 1;
try {
  const server = await startServer(18470, ['--ring-timeout', String(RING_TIMEOUT)]);
  servers.push(server);
  const ctx = await launchBrowser();
  contexts.push(ctx);
  await ctx.addInitScript(recorder);

  // ------------------------------------------------------------ badge words, Enter, focus
  let alice;
  let bob;
  await step('registering with Enter', async () => {
    alice = await openClient(ctx, server.url, null);
    check('the badge says "Not registered" before registering', await text(alice, '#status-state') === 'Not registered',
      await text(alice, '#status-state'));
    // The name limit counts characters, as the server does (issue 14 item 12).
    const chars = async () => alice.evaluate(() => [...document.querySelector('#name').value].length);
    await alice.fill('#name', '😀'.repeat(40));
    check('40 emoji fit in the name field', await chars() === 40, `${await chars()} characters kept`);
    await alice.fill('#name', '😀'.repeat(70));
    check('the name field stops at 64 characters', await chars() === 64, `${await chars()} characters kept`);
    await alice.fill('#name', 'alice');
    await alice.press('#name', 'Enter');
    await waitState(alice, 'idle');
    check('the badge says "Ready" once registered (not "idle")', await text(alice, '#status-state') === 'Ready',
      await text(alice, '#status-state'));
    await alice.waitForFunction(() => document.activeElement && document.activeElement.id === 'peer', null, { timeout: 5000 }).catch(() => {});
    check('after registering with Enter the focus is on the peer field', await focused(alice) === 'peer', `focus on ${await focused(alice)}`);
    bob = await newClient(ctx, server.url, 'bob');
  });

  // ------------------------------------------------------------ declined, with the dialog's keys
  await step('declined', async () => {
    await bob.focus('#peer');
    await alice.fill('#peer', 'bob');
    await alice.press('#peer', 'Enter');
    await waitState(bob, 'incoming');
    check('the caller\'s badge says "Calling…"', await text(alice, '#status-state') === 'Calling…', await text(alice, '#status-state'));
    check('the callee\'s badge says "Incoming call"', await text(bob, '#status-state') === 'Incoming call', await text(bob, '#status-state'));
    check('the incoming-call dialog is shown', await bob.isVisible('#incoming'));
    check('the incoming-call dialog takes the focus (Accept)', await focused(bob) === 'accept', `focus on ${await focused(bob)}`);
    await bob.keyboard.press('Tab');
    check('Tab stays in the dialog', await focused(bob) === 'reject', `focus on ${await focused(bob)}`);
    await bob.keyboard.press('Tab');
    check('Tab comes back to Accept', await focused(bob) === 'accept', `focus on ${await focused(bob)}`);
    await bob.keyboard.press('Escape');
    await waitState(bob, 'idle');
    check('Escape rejects the call', !(await bob.isVisible('#incoming')));
    check('the focus goes back to the peer field when the dialog closes', await focused(bob) === 'peer', `focus on ${await focused(bob)}`);
    await waitState(alice, 'idle');
    await expectText(alice, '#status-note', 'bob declined the call', 'the caller sees the decline as an outcome');
    await expectNoError(alice, 'a decline is not shown as an error');
    const color = await alice.$eval('#status-note', (e) => getComputedStyle(e).color);
    const red = await alice.$eval('#status-error', (e) => { e.hidden = false; const c = getComputedStyle(e).color; e.hidden = true; return c; });
    check('the outcome is not in the error colour', color !== red, `${color} vs ${red}`);
    await expectText(bob, '#status-note', 'You declined the call from alice', 'the callee sees what it did');
  });

  // ------------------------------------------------------------ busy
  let carol;
  await step('busy', async () => {
    carol = await newClient(ctx, server.url, 'carol');
    await carol.evaluate(() => window.one2one.call('bob'));
    await waitState(bob, 'incoming');
    await alice.evaluate(() => window.one2one.call('bob'));
    await waitState(alice, 'idle');
    await expectText(alice, '#status-note', 'bob is busy', 'a busy callee is an outcome');
    await expectNoError(alice, 'busy is not shown as an error');
    await bob.keyboard.press('Escape');
    await waitState(carol, 'idle');
    await expectText(carol, '#status-note', 'bob declined the call', 'the other caller sees the decline');
  });

  // ------------------------------------------------------------ no answer
  await step('no answer', async () => {
    await alice.evaluate(() => window.one2one.call('bob'));
    await waitState(bob, 'incoming');
    await waitState(alice, 'idle', (RING_TIMEOUT + 10) * 1000);
    await expectText(alice, '#status-note', 'bob did not answer', 'no answer is an outcome');
    await expectNoError(alice, 'no answer is not shown as an error');
    await waitState(bob, 'idle');
    await expectText(bob, '#status-note', 'Missed call from alice', 'the callee sees a missed call');
    check('the dialog is gone after the ring timeout', !(await bob.isVisible('#incoming')));
  });

  // ------------------------------------------------------------ Enter accepts; "In a call" once connected; phone layout
  await step('accepted call', async () => {
    await alice.setViewportSize({ width: 390, height: 844 });
    await alice.evaluate(() => { window.__states.length = 0; });
    await bob.evaluate(() => { window.__states.length = 0; });
    await alice.evaluate(() => window.one2one.call('bob'));
    await waitState(bob, 'incoming');
    await bob.keyboard.press('Enter');
    await waitState(alice, 'incall', 30000);
    await waitState(bob, 'incall', 30000);
    check('Enter accepts the call', true);
    for (const [who, page] of [['caller', alice], ['callee', bob]]) {
      const st = await states(page);
      const connecting = st.find((s) => s.state === 'connecting');
      const incall = st.find((s) => s.state === 'incall');
      check(`the ${who} shows "Connecting…" before the media connects`, !!connecting && connecting.badge === 'Connecting…' && connecting.conn !== 'connected',
        JSON.stringify(connecting));
      check(`the ${who} shows "In a call" only once the peer connection is connected`, !!incall && incall.badge === 'In a call' && incall.conn === 'connected',
        JSON.stringify(incall));
    }
    await until('bob to decode video', async () => { const s = await inbound(bob); return s && s.framesDecoded > 5; }, 20000, 250);
    check('media flows', true);

    // Phone-sized screen: the self view over the remote video's picture.
    const box = await until('both videos to show pictures', () => alice.evaluate(() => {
      const r = document.getElementById('remote');
      const l = document.querySelector('.local-wrap');
      if (!r.videoWidth || !document.getElementById('local').videoWidth) return null;
      const rb = r.getBoundingClientRect();
      const lb = l.getBoundingClientRect();
      // The picture inside the remote <video> (object-fit: contain).
      const scale = Math.min(rb.width / r.videoWidth, rb.height / r.videoHeight);
      const w = r.videoWidth * scale, h = r.videoHeight * scale;
      const px = rb.x + (rb.width - w) / 2, py = rb.y + (rb.height - h) / 2;
      const ix = Math.max(0, Math.min(px + w, lb.x + lb.width) - Math.max(px, lb.x));
      const iy = Math.max(0, Math.min(py + h, lb.y + lb.height) - Math.max(py, lb.y));
      return { share: (ix * iy) / (w * h), widthShare: lb.width / w, picture: [w, h].map(Math.round), self: [lb.width, lb.height].map(Math.round) };
    }), 20000, 250);
    check('at 390x844 the self view covers at most 15% of the remote picture', box.share <= 0.15,
      `${(box.share * 100).toFixed(1)}%: self ${box.self.join('x')} over ${box.picture.join('x')}`);
    check('at 390x844 the self view is at most a quarter of the remote picture\'s width', box.widthShare <= 0.26,
      `${(box.widthShare * 100).toFixed(1)}%`);
    await alice.setViewportSize({ width: 1280, height: 720 });

    await alice.evaluate(() => window.one2one.hangup());
    await waitState(bob, 'idle');
    await expectText(alice, '#status-note', 'You ended the call with bob', 'the one who hangs up sees it');
    await expectText(bob, '#status-note', 'Call ended: alice hung up', 'the other side sees who hung up');
    await expectNoError(bob, 'a hang-up is not shown as an error');
  });

  // ------------------------------------------------------------ a callee without a camera
  await step('callee without a camera', async () => {
    const noCam = await launchBrowser({ fakeDevices: 'device-count=0' });
    contexts.push(noCam);
    await noCam.addInitScript(recorder);
    const dave = await newClient(noCam, server.url, 'dave');
    await alice.evaluate(() => window.one2one.call('dave'));
    await waitState(dave, 'incoming');
    await dave.keyboard.press('Enter');
    let joined = true;
    await waitState(alice, 'incall', 30000).catch(() => { joined = false; });
    const aNote = await text(alice, '#status-note');
    const aErr = await text(alice, '#status-error');
    check('the caller of a callee without a camera is not told "declined"', !/declin/i.test(aNote + aErr),
      `note ${JSON.stringify(aNote)} error ${JSON.stringify(aErr)}`);
    check('a callee without a camera joins the call (audio only)', joined && await dave.evaluate(() => window.one2one.state) === 'incall',
      `caller ${await alice.evaluate(() => window.one2one.state)}, callee ${await dave.evaluate(() => window.one2one.state)}; note ${JSON.stringify(aNote)} error ${JSON.stringify(aErr)}`);
    await expectText(dave, '#status-note', 'Sending audio only. No camera found', 'the callee is told it sends audio only');
    if (joined) {
      try {
        const s = await until('alice to receive dave\'s audio', async () => { const s = await inbound(alice); return s && s.audioPackets > 20 ? s : null; }, 20000, 250);
        check('the caller hears the callee without a camera', true, `${s.audioPackets} audio packets`);
      } catch (e) { check('the caller hears the callee without a camera', false, e.message); }
      try {
        const s = await until('dave to decode alice\'s video', async () => { const s = await inbound(dave); return s && s.framesDecoded > 10 ? s : null; }, 20000, 250);
        check('the callee without a camera still sees the caller', true, `${s.framesDecoded} frames`);
      } catch (e) { check('the callee without a camera still sees the caller', false, e.message); }
    }
    await alice.evaluate(() => window.one2one.hangup());
    await waitState(dave, 'idle');
    await dave.close();
  });

  // ------------------------------------------------------------ a blocked camera, then everything blocked
  await step('blocked camera', async () => {
    const denied = await launchBrowser({ fakeUi: false, permissions: ['microphone'], origin: server.url });
    contexts.push(denied);
    await denied.addInitScript(recorder);
    const erin = await newClient(denied, server.url, 'erin');
    await erin.evaluate(() => window.one2one.call('bob'));
    await waitState(bob, 'incoming');
    await bob.keyboard.press('Enter');
    await waitState(erin, 'incall', 30000);
    await expectText(erin, '#status-note', `Sending audio only. The camera is blocked: allow it for this site ${ALLOW}`,
      'a blocked camera says what to do, and the call goes on with audio');
    await erin.evaluate(() => window.one2one.hangup());
    await waitState(bob, 'idle');
    await erin.close();

    await denied.clearPermissions();
    const frank = await newClient(denied, server.url, 'frank');
    await bob.evaluate(() => { window.__states.length = 0; });
    await frank.evaluate(() => window.one2one.call('bob'));
    await waitState(frank, 'idle');
    await expectText(frank, '#status-error',
      `Error: The camera and microphone are blocked: allow them for this site ${ALLOW}`,
      'a blocked camera and microphone say what to do');
    await new Promise((r) => setTimeout(r, 500));
    check('a caller without any media never rings the callee', !(await states(bob)).some((s) => s.state === 'incoming'),
      JSON.stringify(await states(bob)));
    await frank.close();
  });

  // ------------------------------------------------------------ plain HTTP on a non-localhost address
  await step('plain HTTP', async () => {
    const plain = await startServer(18471, ['--http']);
    servers.push(plain);
    const gina = await openClient(ctx, plain.url, null);
    check('the plain-HTTP page is not a secure context', !(await gina.evaluate(() => window.isSecureContext)));
    await expectText(gina, '#status-error', `Error: ${HTTPS_NEEDED}`, 'the plain-HTTP page says HTTPS is needed as it loads');
    await gina.evaluate(() => window.one2one.register('gina'));
    await waitState(gina, 'idle');
    const hank = await newClient(ctx, plain.url, 'hank');
    await gina.evaluate(() => window.one2one.call('hank'));
    await waitState(gina, 'idle');
    await expectText(gina, '#status-error', `Error: ${HTTPS_NEEDED}`, 'a call from the plain-HTTP page says HTTPS is needed');
    await new Promise((r) => setTimeout(r, 500));
    check('and nobody was rung', !(await states(hank)).some((s) => s.state === 'incoming'), JSON.stringify(await states(hank)));
    await gina.close();
    await hank.close();
  });

  // ------------------------------------------------------------ a message over the server's limit
  await step('too large', async () => {
    const small = await startServer(18472, ['--max-message-bytes', '1000']);
    servers.push(small);
    const ivy = await openClient(ctx, small.url, null);
    const errors = [];
    ivy.on('websocket', (ws) => ws.on('framereceived', (f) => {
      try { const m = JSON.parse(f.payload); if (m.id === 'error') errors.push(m.message); } catch { /* not JSON */ }
    }));
    await ivy.evaluate(() => window.one2one.register('ivy'));
    await waitState(ivy, 'idle');
    const jack = await newClient(ctx, small.url, 'jack');
    await ivy.evaluate(() => window.one2one.call('jack'));
    await ivy.waitForFunction(() => ['idle', 'unregistered'].includes(window.one2one.state), null, { timeout: 15000 });
    await new Promise((r) => setTimeout(r, 500)); // a close that follows must not replace the words
    const shown = await text(ivy, '#status-error');
    check('the server answers the oversized offer with an error message', errors.length > 0, `error frames ${JSON.stringify(errors)}`);
    check('the page shows the server\'s error text', errors.length > 0 && shown.includes(errors[0]),
      `shown ${JSON.stringify(shown)}, server said ${JSON.stringify(errors)}`);
    check('the oversized offer rings nobody', !(await states(jack)).some((s) => s.state === 'incoming'));
    await ivy.close();
    await jack.close();
  });

  // ------------------------------------------------------------ SIGTERM during a call
  await step('shutdown', async () => {
    await bob.evaluate(() => { window.one2one.autoAnswer = true; });
    await alice.evaluate(() => window.one2one.call('bob'));
    await waitState(alice, 'incall', 30000);
    await waitState(bob, 'incall', 30000);
    const t0 = { alice: await alice.evaluate(() => performance.now()), bob: await bob.evaluate(() => performance.now()) };
    server.stop();
    await server.exited;
    await waitState(alice, 'unregistered', 10000);
    await new Promise((r) => setTimeout(r, 1000));
    for (const [who, page] of [['alice', alice], ['bob', bob]]) {
      await expectText(page, '#status-note', 'Call ended: server shutting down', `${who} keeps "Call ended: server shutting down" after the socket closes`, 1000);
      await expectNoError(page, `${who} is not shown "Disconnected from server" as an error`);
      const after = (await page.evaluate(() => window.__status)).filter((s) => s.t >= t0[who]);
      check(`${who}'s status line never said "Disconnected from server"`, !after.some((s) => /Disconnected from server/.test(s.error)), JSON.stringify(after));
      check(`${who}'s badge says "Not registered"`, await text(page, '#status-state') === 'Not registered', await text(page, '#status-state'));
    }
  });

  code = summary();
} catch (e) {
  check('page ux', false, e.stack || String(e));
  code = summary();
} finally {
  for (const c of contexts) await c.close().catch(() => {});
  for (const s of servers) s.stop();
}
process.exit(code);
