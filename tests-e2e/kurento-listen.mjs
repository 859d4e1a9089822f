// kurento-client 7.3.0 drives one2one-server's --kms-listen: the test app
// kurento-app/server.js (written the way Kurento's one-to-one tutorial
// server is) carries a call between two headless Chromium pages on a
// pipeline of one2one-server's KMS endpoint. Both pages decode the other's
// video and receive its audio (getStats, growing), the remote video is the
// other page's camera, and after the hang-up the pipeline and its
// endpoints are released (/metrics); a second call, the other way round,
// on the same kurento-client session, is released too.
import { check, summary, startServer, launchBrowser, openClient, waitState, IP } from './lib.mjs';
import { requireParts, tcpOpen, startApp, checkMediaFlows, checkGreenCanvas, checkGauges } from './kurento-lib.mjs';

const SERVER_PORT = 18480;
const KMS_PORT = 18481;
const APP_PORT = 18482;

let server;
let app;
let context;
let code = 1;
try {
  requireParts({ serverFlags: ['--kms-listen'] });
  server = await startServer(SERVER_PORT, ['--http', '--kms-listen', `${IP}:${KMS_PORT}`]);
  await tcpOpen(IP, KMS_PORT, `one2one-server's --kms-listen ws://${IP}:${KMS_PORT}/kurento`);
  check('one2one-server listens for kurento-client on --kms-listen', true, `ws://${IP}:${KMS_PORT}/kurento`);
  await checkGauges(server.url, { one2one_kms_sessions: 0, one2one_kms_pipelines: 0, one2one_kms_endpoints: 0 },
    'before any call /metrics shows no KMS session, pipeline or endpoint');

  app = await startApp(APP_PORT, `ws://${IP}:${KMS_PORT}/kurento`);
  context = await launchBrowser();
  const alice = await openClient(context, app.url, 'alice');
  const bob = await openClient(context, app.url, 'bob');
  check('both pages registered with the kurento app', true, app.url);

  await alice.evaluate(() => window.one2one.call('bob'));
  await waitState(bob, 'incoming');
  await bob.evaluate(() => window.one2one.accept());
  await waitState(alice, 'incall', 30000);
  await waitState(bob, 'incall', 30000);
  check('alice calls bob, bob accepts, both pages are in the call', true);
  await checkGauges(server.url, { one2one_kms_sessions: 1, one2one_kms_pipelines: 1, one2one_kms_endpoints: 2 },
    'in the call /metrics shows kurento-client\'s session, one pipeline and two endpoints');

  await checkMediaFlows(alice, 'alice', 'bob');
  await checkMediaFlows(bob, 'bob', 'alice');
  await checkGreenCanvas(alice, 'alice', 'bob');
  await checkGreenCanvas(bob, 'bob', 'alice');

  await alice.evaluate(() => window.one2one.hangup());
  await waitState(alice, 'idle');
  await waitState(bob, 'idle');
  check('after alice hangs up both pages are idle', true);
  await checkGauges(server.url, { one2one_kms_pipelines: 0, one2one_kms_endpoints: 0 },
    'after the hang-up the pipeline is released: /metrics shows 0 pipelines and 0 endpoints');

  // A second call, the other way round, on the same kurento-client session.
  await bob.evaluate(() => window.one2one.call('alice'));
  await waitState(alice, 'incoming');
  await alice.evaluate(() => window.one2one.accept());
  await waitState(bob, 'incall', 30000);
  await waitState(alice, 'incall', 30000);
  check('then bob calls alice on the same kurento-client session, and she accepts', true);
  await checkGauges(server.url, { one2one_kms_sessions: 1, one2one_kms_pipelines: 1, one2one_kms_endpoints: 2 },
    'the second call is a new pipeline with two endpoints in the same session');
  await checkMediaFlows(alice, 'alice', 'bob');
  await checkMediaFlows(bob, 'bob', 'alice');
  await bob.evaluate(() => window.one2one.hangup());
  await waitState(alice, 'idle');
  await waitState(bob, 'idle');
  await checkGauges(server.url, { one2one_kms_pipelines: 0, one2one_kms_endpoints: 0 },
    'after bob hangs up the second pipeline is released too');
  await checkGauges(server.url, { one2one_kms_errors_total: 0 },
    'the --kms-listen endpoint answered none of the tutorial\'s requests with an error');
  const errors = app.log.filter((l) => /failed|error/i.test(l) && !/^kurento-app: connection \d+ (received|closed)/.test(l));
  check('the kurento app logged no error', errors.length === 0, errors.join(' | '));
  code = summary();
} catch (e) {
  check('a kurento-client call through --kms-listen', false, e.stack || String(e));
  code = summary();
} finally {
  if (context) await context.close().catch(() => {});
  if (app) app.stop();
  if (server) server.stop();
}
process.exit(code);
