// A one-to-one video call app server on kurento-client 7.3.0, built the way
// Kurento's "Node.js - One to one video call" tutorial builds its server: a
// user registry, a queue of browser candidates per user, and a
// CallMediaPipeline (one MediaPipeline, two WebRtcEndpoints connected both
// ways) per call. It speaks the tutorial's browser protocol on the WebSocket
// /one2one and serves a web page over plain HTTP (on 127.0.0.1, a secure
// context, so the page gets the camera). By default the page is one2one's
// web client (server/static), which speaks the same protocol.
//
//   node server.js --ws_uri=ws://HOST:PORT/kurento [--port=N | --as_uri=http://127.0.0.1:N/]
//                  [--static=DIR] [--kms_timeout=SECONDS]
//
// Where it parts from the tutorial: every kurento error (and a media server
// that cannot be reached within --kms_timeout) still answers the browser,
// the caller with callResponse "rejected" and the error's text, the callee
// with stopCommunication; a message that is not JSON gets an error reply
// instead of crashing the process; a candidate found for a user who has
// gone is dropped instead of crashing it.
'use strict';

const fs = require('fs');
const http = require('http');
const path = require('path');
const url = require('url');
const kurento = require('kurento-client');
const { WebSocketServer } = require('ws');

// ---------------------------------------------------------------- arguments
function parseArgs(list) {
  const out = {
    ws_uri: 'ws://localhost:8888/kurento',
    as_uri: 'http://127.0.0.1:8080/',
    static: path.join(__dirname, '..', '..', 'server', 'static'),
    kms_timeout: '10',
  };
  for (let i = 0; i < list.length; i++) {
    const m = /^--([a-z_]+)(?:=(.*))?$/.exec(list[i]);
    if (!m) throw new Error(`unknown argument ${list[i]}`);
    const key = m[1];
    const value = m[2] !== undefined ? m[2] : list[++i];
    if (value === undefined) throw new Error(`--${key} needs a value`);
    out[key] = value;
  }
  return out;
}

let argv;
try {
  argv = parseArgs(process.argv.slice(2));
} catch (e) {
  console.error(`kurento-app: ${e.message}`);
  process.exit(2);
}
const asUrl = url.parse(argv.as_uri);
const listenHost = asUrl.hostname || '127.0.0.1';
const listenPort = Number(argv.port || asUrl.port || 8080);
const kmsTimeoutMs = Number(argv.kms_timeout) * 1000;

// ---------------------------------------------------------------- users
let idCounter = 0;
function nextUniqueId() {
  idCounter++;
  return idCounter.toString();
}

class UserSession {
  constructor(id, name, ws) {
    this.id = id;
    this.name = name;
    this.ws = ws;
    this.peer = null;
    this.sdpOffer = null;
  }

  sendMessage(message) {
    if (this.ws.readyState !== this.ws.OPEN) return;
    this.ws.send(JSON.stringify(message));
  }
}

class UserRegistry {
  constructor() {
    this.usersById = {};
    this.usersByName = {};
  }

  register(user) {
    this.usersById[user.id] = user;
    this.usersByName[user.name] = user;
  }

  unregister(id) {
    const user = this.getById(id);
    if (user) delete this.usersById[id];
    if (user && this.getByName(user.name) === user) delete this.usersByName[user.name];
  }

  getById(id) {
    return this.usersById[id];
  }

  getByName(name) {
    return this.usersByName[name];
  }
}

const userRegistry = new UserRegistry();
const pipelines = {};
const candidatesQueue = {};

// ---------------------------------------------------------------- media server
let kurentoClient = null;
let kurentoWaiters = null;

function getKurentoClient(callback) {
  if (kurentoClient !== null) return callback(null, kurentoClient);

  // One connection attempt at a time; every call waiting for it is answered,
  // and none waits longer than --kms_timeout (kurento-client retries forever).
  const waiter = { callback, done: false };
  waiter.timer = setTimeout(() => {
    waiter.done = true;
    callback(`Could not find media server at address ${argv.ws_uri} (no answer within ${argv.kms_timeout} s)`);
  }, kmsTimeoutMs);
  if (kurentoWaiters) {
    kurentoWaiters.push(waiter);
    return;
  }
  kurentoWaiters = [waiter];

  const connecting = kurento(argv.ws_uri, (error, client) => {
    const waiters = kurentoWaiters;
    kurentoWaiters = null;
    if (!error) kurentoClient = client;
    else console.log(`kurento-app: could not find media server at address ${argv.ws_uri}: ${errorText(error)}`);
    for (const w of waiters) {
      clearTimeout(w.timer);
      if (w.done) continue;
      w.done = true;
      if (error) w.callback(`Could not find media server at address ${argv.ws_uri}: ${errorText(error)}`);
      else w.callback(null, client);
    }
  });
  // With the npm reconnect-ws (the override kurento-client 7.3.0 needs), a
  // refused connection is an 'error' event with no listener, which would end
  // the process; with one, the client logs it and keeps retrying.
  if (connecting && connecting._re) {
    connecting._re.on('error', (error) => console.log(`kurento-app: media server ${argv.ws_uri}: ${errorText(error)}`));
  }
}

function errorText(error) {
  if (error === null || error === undefined) return '';
  if (typeof error === 'string') return error;
  if (error.message) return error.message;
  try { return JSON.stringify(error); } catch (_) { return String(error); }
}

// Sends each candidate a user's endpoint finds to that user's browser.
function forwardCandidates(webRtcEndpoint, userId) {
  webRtcEndpoint.on('IceCandidateFound', (event) => {
    const candidate = kurento.getComplexType('IceCandidate')(event.candidate);
    const user = userRegistry.getById(userId);
    if (user) user.sendMessage({ id: 'iceCandidate', candidate });
  });
}

// The browser candidates that arrived before the user's endpoint existed.
function flushCandidates(webRtcEndpoint, userId) {
  const queue = candidatesQueue[userId];
  if (!queue) return;
  while (queue.length) webRtcEndpoint.addIceCandidate(queue.shift());
}

class CallMediaPipeline {
  constructor() {
    this.pipeline = null;
    this.webRtcEndpoint = {};
  }

  createPipeline(callerId, calleeId, callback) {
    getKurentoClient((error, client) => {
      if (error) return callback(error);

      client.create('MediaPipeline', (error, pipeline) => {
        if (error) return callback(error);

        pipeline.create('WebRtcEndpoint', (error, callerEndpoint) => {
          if (error) {
            pipeline.release();
            return callback(error);
          }
          flushCandidates(callerEndpoint, callerId);
          forwardCandidates(callerEndpoint, callerId);

          pipeline.create('WebRtcEndpoint', (error, calleeEndpoint) => {
            if (error) {
              pipeline.release();
              return callback(error);
            }
            flushCandidates(calleeEndpoint, calleeId);
            forwardCandidates(calleeEndpoint, calleeId);

            // One connect per direction: the caller's media to the callee,
            // then the callee's to the caller.
            callerEndpoint.connect(calleeEndpoint, (error) => {
              if (error) {
                pipeline.release();
                return callback(error);
              }

              calleeEndpoint.connect(callerEndpoint, (error) => {
                if (error) {
                  pipeline.release();
                  return callback(error);
                }
              });

              this.pipeline = pipeline;
              this.webRtcEndpoint[callerId] = callerEndpoint;
              this.webRtcEndpoint[calleeId] = calleeEndpoint;
              callback(null);
            });
          });
        });
      });
    });
  }

  generateSdpAnswer(id, sdpOffer, callback) {
    let answered = false;
    const once = (error, answer) => {
      if (answered) return;
      answered = true;
      callback(error, answer);
    };
    const endpoint = this.webRtcEndpoint[id];
    endpoint.processOffer(sdpOffer, once);
    endpoint.gatherCandidates((error) => {
      if (error) once(error);
    });
  }

  release() {
    if (this.pipeline) this.pipeline.release();
    this.pipeline = null;
  }
}

// ---------------------------------------------------------------- signaling
function register(id, name, ws) {
  function onError(error) {
    ws.send(JSON.stringify({ id: 'registerResponse', response: 'rejected ', message: error }));
  }

  if (!name) return onError('empty user name');
  if (userRegistry.getByName(name)) return onError(`User ${name} is already registered`);

  userRegistry.register(new UserSession(id, name, ws));
  ws.send(JSON.stringify({ id: 'registerResponse', response: 'accepted' }));
}

function call(callerId, to, from, sdpOffer) {
  clearCandidatesQueue(callerId);

  const caller = userRegistry.getById(callerId);
  if (!caller) return;
  let rejectCause = `User ${to} is not registered`;
  const callee = userRegistry.getByName(to);
  if (callee) {
    caller.sdpOffer = sdpOffer;
    callee.peer = from;
    caller.peer = to;
    try {
      return callee.sendMessage({ id: 'incomingCall', from });
    } catch (exception) {
      rejectCause = `Error ${exception}`;
    }
  }
  caller.sendMessage({ id: 'callResponse', response: 'rejected: ', message: rejectCause });
}

function incomingCallResponse(calleeId, from, callResponse, calleeSdp) {
  clearCandidatesQueue(calleeId);

  const callee = userRegistry.getById(calleeId);
  if (!callee) return;
  let pipeline = null;
  let caller = null;

  function onError(callerReason, calleeReason) {
    console.log(`kurento-app: call ${from} -> ${callee.name} failed: ${errorText(callerReason)}`);
    if (pipeline) pipeline.release();
    delete pipelines[calleeId];
    if (caller) {
      delete pipelines[caller.id];
      const callerMessage = { id: 'callResponse', response: 'rejected' };
      if (callerReason) callerMessage.message = errorText(callerReason);
      caller.sendMessage(callerMessage);
    }
    const calleeMessage = { id: 'stopCommunication' };
    if (calleeReason) calleeMessage.message = errorText(calleeReason);
    callee.sendMessage(calleeMessage);
  }

  if (!from || !userRegistry.getByName(from)) return onError(null, `unknown from = ${from}`);
  caller = userRegistry.getByName(from);

  if (callResponse !== 'accept') {
    caller.sendMessage({ id: 'callResponse', response: 'rejected', message: 'user declined' });
    return;
  }

  pipeline = new CallMediaPipeline();
  pipelines[caller.id] = pipeline;
  pipelines[callee.id] = pipeline;

  pipeline.createPipeline(caller.id, callee.id, (error) => {
    if (error) return onError(error, error);

    pipeline.generateSdpAnswer(caller.id, caller.sdpOffer, (error, callerSdpAnswer) => {
      if (error) return onError(error, error);

      pipeline.generateSdpAnswer(callee.id, calleeSdp, (error, calleeSdpAnswer) => {
        if (error) return onError(error, error);

        callee.sendMessage({ id: 'startCommunication', sdpAnswer: calleeSdpAnswer });
        caller.sendMessage({ id: 'callResponse', response: 'accepted', sdpAnswer: callerSdpAnswer });
      });
    });
  });
}

function stop(sessionId) {
  const pipeline = pipelines[sessionId];
  if (!pipeline) return;
  delete pipelines[sessionId];
  pipeline.release();

  const stopperUser = userRegistry.getById(sessionId);
  const stoppedUser = stopperUser && userRegistry.getByName(stopperUser.peer);
  if (stopperUser) stopperUser.peer = null;
  if (stoppedUser) {
    stoppedUser.peer = null;
    delete pipelines[stoppedUser.id];
    stoppedUser.sendMessage({ id: 'stopCommunication', message: 'remote user hanged out' });
  }
  clearCandidatesQueue(sessionId);
}

function onIceCandidate(sessionId, _candidate) {
  const user = userRegistry.getById(sessionId);
  if (!user) return;
  let candidate;
  try {
    candidate = kurento.getComplexType('IceCandidate')(_candidate);
  } catch (error) {
    return user.sendMessage({ id: 'error', message: `Invalid candidate: ${errorText(error)}` });
  }

  const pipeline = pipelines[user.id];
  if (pipeline && pipeline.webRtcEndpoint && pipeline.webRtcEndpoint[user.id]) {
    pipeline.webRtcEndpoint[user.id].addIceCandidate(candidate);
  } else {
    if (!candidatesQueue[user.id]) candidatesQueue[user.id] = [];
    candidatesQueue[user.id].push(candidate);
  }
}

function clearCandidatesQueue(sessionId) {
  delete candidatesQueue[sessionId];
}

// ---------------------------------------------------------------- HTTP and WebSocket
const CONTENT_TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
  '.ico': 'image/x-icon',
};

const staticRoot = path.resolve(argv.static);
if (!fs.existsSync(path.join(staticRoot, 'index.html'))) {
  console.error(`kurento-app: --static ${staticRoot} has no index.html`);
  process.exit(2);
}

const server = http.createServer((req, res) => {
  const pathname = decodeURIComponent(url.parse(req.url).pathname || '/');
  if (pathname === '/api/config') {
    // one2one's page asks for its ICE servers here; this app has none.
    res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' });
    return res.end('{"iceServers":[]}');
  }
  const file = path.join(staticRoot, pathname === '/' ? 'index.html' : pathname);
  if (!file.startsWith(staticRoot + path.sep)) {
    res.writeHead(403);
    return res.end();
  }
  fs.readFile(file, (error, body) => {
    if (error) {
      res.writeHead(404, { 'Content-Type': 'text/plain' });
      return res.end('not found\n');
    }
    res.writeHead(200, { 'Content-Type': CONTENT_TYPES[path.extname(file)] || 'application/octet-stream' });
    res.end(body);
  });
});

const wss = new WebSocketServer({ server, path: '/one2one' });

wss.on('connection', (ws) => {
  const sessionId = nextUniqueId();
  console.log(`kurento-app: connection ${sessionId} received`);

  ws.on('error', () => {
    console.log(`kurento-app: connection ${sessionId} error`);
    stop(sessionId);
  });

  ws.on('close', () => {
    console.log(`kurento-app: connection ${sessionId} closed`);
    stop(sessionId);
    userRegistry.unregister(sessionId);
  });

  ws.on('message', (data) => {
    let message;
    try {
      message = JSON.parse(String(data));
    } catch (_) {
      return ws.send(JSON.stringify({ id: 'error', message: 'Invalid message: not JSON' }));
    }
    if (message === null || typeof message !== 'object') {
      return ws.send(JSON.stringify({ id: 'error', message: 'Invalid message: not an object' }));
    }
    console.log(`kurento-app: connection ${sessionId} received ${message.id}`);

    switch (message.id) {
      case 'register':
        register(sessionId, message.name, ws);
        break;
      case 'call':
        call(sessionId, message.to, message.from, message.sdpOffer);
        break;
      case 'incomingCallResponse':
        incomingCallResponse(sessionId, message.from, message.callResponse, message.sdpOffer);
        break;
      case 'stop':
        stop(sessionId);
        break;
      case 'onIceCandidate':
        onIceCandidate(sessionId, message.candidate);
        break;
      default:
        ws.send(JSON.stringify({ id: 'error', message: `Invalid message ${message.id}` }));
        break;
    }
  });
});

server.on('error', (error) => {
  console.error(`kurento-app: cannot listen on ${listenHost}:${listenPort}: ${error.message}`);
  process.exit(2);
});

server.listen(listenPort, listenHost, () => {
  const { port } = server.address();
  console.log(`kurento-app: media server ${argv.ws_uri}`);
  console.log(`kurento-app: open http://${listenHost}:${port}/ with a WebRTC capable browser`);
});

for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(0));
