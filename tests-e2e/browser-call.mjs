// Two headless Chromium pages call each other through one2one-server's
// embedded relay: register, call, accept, media both ways (getStats), hang
// up, and the clear errors for a taken name and an unknown user.
import { check, summary, startServer, launchBrowser, openClient, waitState, inbound, until } from './lib.mjs';

const server = await startServer(18443);
let context;
let code = 1;
try {
  context = await launchBrowser();
  const alice = await openClient(context, server.url, 'alice');
  const bob = await openClient(context, server.url, 'bob');
  check('both pages registered', true);

  // A taken name is refused with a clear error.
  const dup = await openClient(context, server.url, null);
  await dup.evaluate(() => window.one2one.register('alice'));
  await dup.waitForFunction(() => /already registered/.test(window.one2one.lastError || ''), null, { timeout: 10000 })
    .then(() => check('a taken name is refused', true), (e) => check('a taken name is refused', false, e.message));
  await dup.close();

  // An unknown user.
  await alice.evaluate(() => window.one2one.call('zed'));
  await alice.waitForFunction(() => window.one2one.state === 'idle' && /not registered/.test(window.one2one.lastError || ''), null, { timeout: 10000 })
    .then(() => check('a call to an unknown user ends with a clear error', true), (e) => check('unknown user', false, e.message));

  // The call.
  await alice.evaluate(() => window.one2one.call('bob'));
  await waitState(bob, 'incoming');
  check('bob sees the incoming call prompt', await bob.isVisible('#incoming'));
  await bob.evaluate(() => window.one2one.accept());
  await waitState(alice, 'incall', 30000);
  await waitState(bob, 'incall', 30000);
  check('both pages are in the call', true);

  for (const [name, page] of [['alice', alice], ['bob', bob]]) {
    try {
      const s = await until(`${name} to decode video and receive audio`, async () => {
        const s = await inbound(page);
        return s && s.framesDecoded > 30 && s.audioPackets > 0 ? s : null;
      }, 30000, 250);
      check(`${name} decodes the other's video and receives audio`, true,
        `${s.framesDecoded} frames ${s.width}x${s.height}, ${s.audioPackets} audio packets`);
    } catch (e) {
      check(`${name} decodes the other's video and receives audio`, false, `${e.message} ${JSON.stringify(await inbound(page))}`);
    }
  }

  await alice.evaluate(() => window.one2one.hangup());
  await waitState(alice, 'idle');
  await waitState(bob, 'idle');
  check('after the hang-up both pages are idle', true);
  check('no peer connection is left', await alice.evaluate(() => window.one2one.pc === null) && await bob.evaluate(() => window.one2one.pc === null));
  code = summary();
} catch (e) {
  check('browser call', false, e.stack || String(e));
  code = summary();
} finally {
  if (context) await context.close().catch(() => {});
  server.stop();
}
process.exit(code);
