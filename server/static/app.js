/* one2one browser client: one-to-one video calls over a JSON WebSocket. */
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const ui = {
    name: $('name'), register: $('register'), peer: $('peer'), call: $('call'),
    hangup: $('hangup'), incoming: $('incoming'), caller: $('incoming-caller'),
    accept: $('accept'), reject: $('reject'), local: $('local'), remote: $('remote'),
    stState: $('status-state'), stMsg: $('status-msg'), stNote: $('status-note'), stErr: $('status-error'),
  };

  const VIDEO_CONSTRAINTS = { width: 640, height: 480 };
  const CALL_STATES = ['calling', 'connecting', 'incall'];
  // Texts the server sends (shared_proto::text), turned into words for people.
  const SERVER_TEXT = {
    hangup: 'remote user hanged out', declined: 'user declined', busy: 'user busy',
    noAnswer: 'no answer', cancelled: 'caller cancelled', shutdown: 'server shutting down',
  };

  // ---------------------------------------------------------------- state machine
  const machine = {
    state: 'unregistered',
    labels: {
      unregistered: 'Not registered', registering: 'Registering…', idle: 'Ready',
      calling: 'Calling…', incoming: 'Incoming call', connecting: 'Connecting…', incall: 'In a call',
    },
    transitions: {
      unregistered: ['registering'],
      registering: ['idle', 'unregistered'],
      idle: ['calling', 'incoming', 'unregistered'],
      calling: ['connecting', 'idle', 'unregistered'],
      incoming: ['connecting', 'idle', 'unregistered'],
      connecting: ['incall', 'idle', 'unregistered'],
      incall: ['idle', 'unregistered'],
    },
    go(next, text) {
      if (next !== this.state && !this.transitions[this.state].includes(next)) {
        console.warn(`one2one: unexpected transition ${this.state} -> ${next}`);
      }
      this.state = next;
      info = text ?? defaultInfo(next);
      render();
    },
  };

  let ws = null;            // current WebSocket (null when disconnected)
  let myName = '';          // name accepted by the server
  let pendingName = '';     // name sent in the last register request
  let session = null;       // current call: { role, peer, pc, stream, ... }
  let info = '';            // human readable status detail
  let notice = '';          // the outcome of the last call or action (neutral: declined, busy, ended…)
  let lastError = '';       // a real error (red)
  let serverError = null;   // { text, at }: the last `error` the server sent
  let shuttingDown = false; // the server said it is shutting down
  let ringing = false;      // the incoming-call dialog is shown
  let focusBeforeDialog = null;
  let iceServersCache = null;

  function defaultInfo(state) {
    const peer = session ? session.peer : '';
    switch (state) {
      case 'unregistered': return 'Enter your name and press Register';
      case 'registering': return `Registering as ${pendingName}…`;
      case 'idle': return `Registered as ${myName}`;
      case 'calling': return `Calling ${peer}…`;
      case 'incoming': return `${peer} is calling`;
      case 'connecting': return `Connecting with ${peer}…`;
      case 'incall': return `In a call with ${peer}`;
      default: return '';
    }
  }

  function setInfo(text) { info = text; render(); }
  function setError(text) { lastError = String(text || ''); if (lastError) console.warn('one2one:', lastError); render(); }
  function clearError() { lastError = ''; render(); }
  function setNotice(text) { notice = String(text || ''); if (notice) console.log('one2one:', notice); render(); }
  function clearMessages() { lastError = ''; notice = ''; render(); }

  function render() {
    const st = machine.state;
    document.body.dataset.state = st;
    ui.stState.textContent = machine.labels[st] || st;
    ui.stState.dataset.state = st;
    ui.stMsg.textContent = info;
    ui.stNote.textContent = notice;
    ui.stNote.hidden = !notice;
    ui.stErr.textContent = lastError ? `Error: ${lastError}` : '';
    ui.stErr.hidden = !lastError;
    ui.name.disabled = st !== 'unregistered';
    ui.register.disabled = st !== 'unregistered';
    ui.peer.disabled = !['unregistered', 'registering', 'idle'].includes(st);
    ui.call.disabled = st !== 'idle';
    ui.hangup.disabled = !CALL_STATES.includes(st);
    ui.hangup.textContent = st === 'calling' ? 'Cancel' : 'Hang up';
    const ring = st === 'incoming' && !!session;
    ui.caller.textContent = ring ? session.peer : '';
    ui.incoming.hidden = !ring;
    if (ring !== ringing) {
      ringing = ring;
      if (ring) {
        // The dialog is modal: it takes the focus, and gives it back when it closes.
        focusBeforeDialog = document.activeElement;
        ui.accept.focus();
      } else if (ui.incoming.contains(document.activeElement) || document.activeElement === document.body) {
        const back = focusBeforeDialog && !focusBeforeDialog.disabled && document.contains(focusBeforeDialog)
          ? focusBeforeDialog : (st === 'idle' ? ui.peer : null);
        focusBeforeDialog = null;
        if (back) back.focus(); else if (document.activeElement) document.activeElement.blur();
      }
    }
  }

  // ---------------------------------------------------------------- signalling
  function wsUrl() {
    return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/one2one`;
  }

  function connect() {
    if (ws && ws.readyState === WebSocket.OPEN) return Promise.resolve(ws);
    if (ws) { const old = ws; ws = null; old.onclose = old.onmessage = null; try { old.close(); } catch (_) { /* ignore */ } }
    return new Promise((resolve, reject) => {
      let sock;
      try { sock = new WebSocket(wsUrl()); } catch (err) { onDisconnected(false); reject(err); return; }
      ws = sock;
      let opened = false;
      sock.onopen = () => { opened = true; resolve(sock); };
      sock.onmessage = (ev) => { if (sock === ws) onMessage(ev.data); };
      sock.onerror = () => { /* a close event always follows */ };
      sock.onclose = (ev) => {
        if (sock !== ws) return;
        ws = null;
        onDisconnected(opened, ev);
        if (!opened) reject(new Error('connection failed'));
      };
    });
  }

  function send(msg) {
    if (!ws || ws.readyState !== WebSocket.OPEN) { setError('Not connected to server'); return false; }
    try { ws.send(JSON.stringify(msg)); return true; } catch (err) { setError(`Send failed: ${err.message}`); return false; }
  }

  // The socket closed. What the server said last (a stopCommunication for
  // shutdown, an `error`, the close frame's reason) is kept, not replaced.
  function onDisconnected(wasOpen, ev) {
    teardown();
    myName = '';
    const code = ev ? ev.code : 0;
    const reason = ev && ev.reason ? String(ev.reason) : '';
    const recentError = serverError && Date.now() - serverError.at < 5000 ? serverError.text : '';
    serverError = null;
    const goingAway = shuttingDown || (code === 1001 && /shut/i.test(reason));
    shuttingDown = false;
    if (!wasOpen) {
      machine.go('unregistered', 'Press Register to try again');
      setError('Disconnected from server (could not connect)');
    } else if (goingAway) {
      // A planned shutdown is an outcome, not a fault of the page.
      machine.go('unregistered', 'Disconnected: the server shut down. Press Register to reconnect');
      if (notice !== `Call ended: ${SERVER_TEXT.shutdown}`) setNotice('Disconnected: the server is shutting down');
    } else {
      machine.go('unregistered', 'Press Register to reconnect');
      const why = recentError || (reason && code !== 1000 ? reason : '');
      setError(why ? `Disconnected from server: ${why}` : 'Disconnected from server');
    }
  }

  function onMessage(data) {
    let msg;
    try { msg = JSON.parse(data); } catch (_) { console.log('one2one: non-JSON frame ignored', data); return; }
    if (!msg || typeof msg.id !== 'string') { console.log('one2one: frame without id ignored', msg); return; }
    switch (msg.id) {
      case 'registerResponse': return onRegisterResponse(msg);
      case 'incomingCall': return onIncomingCall(msg);
      case 'callResponse': return onCallResponse(msg);
      case 'startCommunication': return onStartCommunication(msg);
      case 'stopCommunication': return onStopCommunication(msg);
      case 'iceCandidate': return onRemoteCandidate(msg);
      case 'error': return onServerError(msg);
      default: console.log('one2one: unknown message ignored', msg);
    }
  }

  function onRegisterResponse(msg) {
    if (machine.state !== 'registering') { console.log('one2one: stray registerResponse', msg); return; }
    if (msg.response === 'accepted') {
      myName = pendingName;
      machine.go('idle');
      getIceServers(); // warm the cache
      ui.peer.focus(); // the next thing to do is to type whom to call
    } else {
      machine.go('unregistered');
      setError(msg.message || `Registration rejected (${String(msg.response || '').trim() || 'unknown reason'})`);
    }
  }

  function onIncomingCall(msg) {
    const from = String(msg.from || '');
    if (machine.state !== 'idle' || session) {
      send({ id: 'incomingCallResponse', from, callResponse: 'reject', message: 'bussy' });
      return;
    }
    session = newSession('callee', from);
    notice = '';
    machine.go('incoming');
    if (api.autoAnswer) accept();
  }

  function onCallResponse(msg) {
    const s = session;
    if (!s || s.role !== 'caller' || machine.state !== 'calling') { console.log('one2one: stray callResponse', msg); return; }
    if (msg.response === 'accepted') {
      applyAnswer(s, msg.sdpAnswer);
    } else {
      teardown(s);
      machine.go('idle');
      const r = describeRejection(msg.message, s.peer);
      if (r.error) setError(r.text); else setNotice(r.text);
    }
  }

  function onStartCommunication(msg) {
    const s = session;
    if (!s || s.role !== 'callee' || machine.state !== 'connecting') { console.log('one2one: stray startCommunication', msg); return; }
    applyAnswer(s, msg.sdpAnswer);
  }

  function onStopCommunication(msg) {
    if (!session && !CALL_STATES.includes(machine.state) && machine.state !== 'incoming') {
      console.log('one2one: stopCommunication with no call', msg);
      return;
    }
    const s = session;
    const m = String(msg.message || '').trim();
    if (m === SERVER_TEXT.shutdown) shuttingDown = true;
    const peer = s ? s.peer : 'the other side';
    const ringingIn = machine.state === 'incoming';
    teardown();
    machine.go('idle');
    if (m === SERVER_TEXT.noAnswer && ringingIn) setNotice(`Missed call from ${peer}`);
    else if (m === SERVER_TEXT.cancelled) setNotice(`Missed call: ${peer} cancelled the call`);
    else if (m === SERVER_TEXT.hangup) setNotice(`Call ended: ${peer} hung up`);
    else setNotice(m ? `Call ended: ${m}` : 'Call ended');
  }

  // The server refused something we sent. A refused offer (too large, say)
  // means the call being set up cannot go on: it ends here, with the
  // server's words.
  function onServerError(msg) {
    const text = String(msg.message || 'Server error');
    serverError = { text, at: Date.now() };
    const s = session;
    const awaiting = s && s.signalled && !s.answered
      && ((s.role === 'caller' && machine.state === 'calling') || (s.role === 'callee' && machine.state === 'connecting'));
    if (awaiting && /too (large|big)|over the limit|invalid message/i.test(text)) {
      if (s.role === 'callee') send({ id: 'incomingCallResponse', from: s.peer, callResponse: 'reject', message: SERVER_TEXT.declined });
      teardown(s);
      machine.go('idle');
      setError(`The server refused the call: ${text}`);
      return;
    }
    setError(text);
  }

  function onRemoteCandidate(msg) {
    const s = session;
    const c = msg.candidate;
    if (!s || !s.pc || !c || !c.candidate) return; // no call (or end-of-candidates): ignore
    const init = { candidate: c.candidate, sdpMid: c.sdpMid ?? null, sdpMLineIndex: c.sdpMLineIndex ?? null };
    if (s.remoteSet) addRemoteCandidate(s, init);
    else s.pendingRemote.push(init);
  }

  // Declined, busy and unanswered are outcomes of a call, shown as such;
  // anything else the server refuses is an error.
  function describeRejection(message, peer) {
    const m = String(message || '').trim();
    if (/not registered|unknown|not found/i.test(m)) return { error: true, text: `Unknown user: ${peer} is not registered` };
    if (/declin/i.test(m)) return { error: false, text: `${peer} declined the call` };
    if (/bus+y/i.test(m)) return { error: false, text: `${peer} is busy` };
    if (/no answer|timeout|timed out/i.test(m)) return { error: false, text: `${peer} did not answer` };
    return { error: true, text: m ? `Call rejected: ${m}` : 'Call rejected' };
  }

  // ---------------------------------------------------------------- media / WebRTC
  async function getIceServers() {
    if (iceServersCache) return iceServersCache;
    try {
      const res = await fetch('/api/config', { cache: 'no-store', headers: { Accept: 'application/json' } });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      const cfg = await res.json();
      iceServersCache = Array.isArray(cfg && cfg.iceServers) ? cfg.iceServers : [];
      return iceServersCache;
    } catch (err) {
      console.warn('one2one: /api/config unavailable, using no ICE servers', err);
      return [];
    }
  }

  function newSession(role, peer) {
    return { role, peer, pc: null, stream: null, remoteStream: null, remoteSet: false,
      signalled: false, answered: false, media: null, pendingRemote: [], pendingLocal: [] };
  }

  // ---------------------------------------------------------------- camera and microphone
  const HTTPS_NEEDED = 'Camera and microphone need HTTPS: this page was opened over plain http://, '
    + 'so the browser does not offer them. Open it with https:// instead';
  const ALLOW_HOW = 'allow it for this site (the camera icon in the address bar, or the site settings), then call again';

  function mediaUnavailable() {
    return !window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia;
  }

  function deviceProblem(what, err) {
    const n = (err && err.name) || 'Error';
    if (n === 'NotAllowedError' || n === 'SecurityError' || n === 'PermissionDeniedError') return `The ${what} is blocked: ${ALLOW_HOW}`;
    if (n === 'NotFoundError' || n === 'OverconstrainedError' || n === 'DevicesNotFoundError') return `No ${what} found`;
    if (n === 'NotReadableError' || n === 'AbortError' || n === 'TrackStartError') return `The ${what} is in use by another application or could not start`;
    return `The ${what} is not available (${n}${err && err.message ? `: ${err.message}` : ''})`;
  }

  // Whatever media the browser gives: camera and microphone, else either
  // one alone. Returns { stream (or null), audio, video, note } where note
  // says in words what is missing and why.
  async function getMedia() {
    if (mediaUnavailable()) return { stream: null, audio: false, video: false, note: HTTPS_NEEDED, insecure: true };
    const gum = (c) => navigator.mediaDevices.getUserMedia(c);
    let both;
    try {
      const stream = await gum({ audio: true, video: VIDEO_CONSTRAINTS });
      return { stream, audio: true, video: true, note: '' };
    } catch (err) { both = err; }
    let micErr;
    try {
      const stream = await gum({ audio: true });
      return { stream, audio: true, video: false, note: `Sending audio only. ${deviceProblem('camera', both)}` };
    } catch (err) { micErr = err; }
    try {
      const stream = await gum({ video: VIDEO_CONSTRAINTS });
      return { stream, audio: false, video: true, note: `Sending video only. ${deviceProblem('microphone', micErr)}` };
    } catch (camErr) {
      const denied = [both, micErr, camErr].every((e) => e && /NotAllowed|Security|PermissionDenied/.test(e.name));
      const missing = [micErr, camErr].every((e) => e && /NotFound|Overconstrained|DevicesNotFound/.test(e.name));
      let note;
      if (denied) note = `The camera and microphone are blocked: allow them for this site (the camera icon in the address bar, or the site settings), then call again`;
      else if (missing) note = 'No camera or microphone found: connect one, then call again';
      else note = `${deviceProblem('camera', camErr)}; ${deviceProblem('microphone', micErr).replace(/^T/, 't')}`;
      return { stream: null, audio: false, video: false, note };
    }
  }

  // getUserMedia + RTCPeerConnection + local offer. Returns the offer SDP.
  // A kind the browser cannot capture is still offered, receive-only, so
  // the other side is seen and heard. With no media at all the caller
  // stops here (`media: true` on the error: nobody was rung); a callee,
  // already rung, joins receive-only (`allowNone`). Callers must check
  // `s === session` after awaiting, since the call may have been torn down.
  async function prepareOffer(s, allowNone) {
    const media = await getMedia();
    if (s !== session) { stopStream(media.stream); throw new Error('aborted'); }
    if (!media.stream && !allowNone) throw Object.assign(new Error(media.note), { media: true });
    s.media = media;
    const stream = media.stream;
    s.stream = stream;
    if (stream && media.video) {
      ui.local.muted = true;
      ui.local.srcObject = stream;
      ui.local.play().catch(() => {});
    }

    const iceServers = await getIceServers();
    if (s !== session) throw new Error('aborted');
    const pc = new RTCPeerConnection({ iceServers });
    s.pc = pc;
    pc.onicecandidate = (ev) => onLocalCandidate(s, ev.candidate);
    pc.ontrack = (ev) => onRemoteTrack(s, ev);
    pc.oniceconnectionstatechange = () => {
      if (s !== session) return;
      const st = pc.iceConnectionState;
      if (st === 'failed') setError('Media connection failed (ICE)');
      else if (st === 'disconnected') setInfo(`Connection to ${s.peer} interrupted…`);
      else if ((st === 'connected' || st === 'completed') && machine.state === 'incall') setInfo(defaultInfo('incall'));
      maybeInCall(s);
    };
    pc.onconnectionstatechange = () => { if (s === session) maybeInCall(s); };
    if (stream) stream.getTracks().forEach((track) => pc.addTrack(track, stream));
    if (!media.audio) pc.addTransceiver('audio', { direction: 'recvonly' });
    if (!media.video) pc.addTransceiver('video', { direction: 'recvonly' });
    const offer = await pc.createOffer();
    if (s !== session) throw new Error('aborted');
    await pc.setLocalDescription(offer);
    if (s !== session) throw new Error('aborted');
    return pc.localDescription.sdp;
  }

  function onLocalCandidate(s, cand) {
    if (s !== session || !cand || !cand.candidate) return; // skip end-of-candidates
    const c = { candidate: cand.candidate, sdpMid: cand.sdpMid, sdpMLineIndex: cand.sdpMLineIndex };
    if (s.signalled) send({ id: 'onIceCandidate', candidate: c });
    else s.pendingLocal.push(c);
  }

  function markSignalled(s) {
    s.signalled = true;
    const queued = s.pendingLocal.splice(0);
    queued.forEach((c) => send({ id: 'onIceCandidate', candidate: c }));
  }

  function onRemoteTrack(s, ev) {
    if (s !== session) return;
    let stream = ev.streams && ev.streams[0];
    if (!stream) {
      if (!s.remoteStream) s.remoteStream = new MediaStream();
      s.remoteStream.addTrack(ev.track);
      stream = s.remoteStream;
    }
    if (ui.remote.srcObject !== stream) ui.remote.srcObject = stream;
    ui.remote.play().catch((err) => {
      if (err.name !== 'NotAllowedError' || s !== session) return;
      ui.remote.muted = true; // autoplay policy: play muted, let the user unmute
      ui.remote.play().catch(() => {});
      setInfo('Remote audio muted by the browser: click the remote video to unmute');
    });
  }

  // "In a call" once media can flow: the peer connection (ICE and DTLS)
  // is connected. Until then the badge says "Connecting…".
  function maybeInCall(s) {
    if (s !== session || !s.pc || !s.remoteSet || machine.state !== 'connecting') return;
    const pc = s.pc;
    const st = pc.connectionState !== undefined ? pc.connectionState : pc.iceConnectionState;
    if (st === 'connected' || st === 'completed') machine.go('incall');
  }

  async function applyAnswer(s, sdp) {
    s.answered = true;
    if (machine.state === 'calling') machine.go('connecting');
    try {
      if (!sdp) throw new Error('server sent no SDP answer');
      await s.pc.setRemoteDescription({ type: 'answer', sdp });
      if (s !== session) return;
      s.remoteSet = true;
      s.pendingRemote.splice(0).forEach((c) => addRemoteCandidate(s, c));
      if (machine.state === 'connecting') setInfo(`Connecting media with ${s.peer}…`);
      maybeInCall(s);
    } catch (err) {
      if (s !== session) return;
      send({ id: 'stop' });
      teardown(s);
      machine.go('idle');
      setError(`Could not start call: ${err.message || err}`);
    }
  }

  function addRemoteCandidate(s, init) {
    if (!s.pc || s.pc.signalingState === 'closed') return;
    s.pc.addIceCandidate(init).catch((err) => console.warn('one2one: addIceCandidate failed', err, init));
  }

  function stopStream(stream) {
    if (stream) stream.getTracks().forEach((t) => t.stop());
  }

  function clearVideo(v) {
    try { v.pause(); } catch (_) { /* ignore */ }
    v.srcObject = null;
  }

  function teardown(s = session) {
    if (!s) return;
    if (s === session) session = null;
    s.pendingRemote.length = 0;
    s.pendingLocal.length = 0;
    if (s.pc) {
      const pc = s.pc;
      pc.onicecandidate = pc.ontrack = pc.oniceconnectionstatechange = pc.onconnectionstatechange = null;
      try { pc.close(); } catch (_) { /* ignore */ }
      s.pc = null;
    }
    stopStream(s.stream);
    s.stream = null;
    s.remoteStream = null;
    clearVideo(ui.local);
    clearVideo(ui.remote);
    ui.remote.muted = false;
  }

  function failSetup(s, err) {
    teardown(s);
    machine.go('idle');
    setError(err.media ? err.message : `Call setup failed: ${err.message || err}`);
  }

  // ---------------------------------------------------------------- user actions
  async function register(name) {
    name = String(name ?? ui.name.value).trim();
    if (machine.state !== 'unregistered') { setError(`Cannot register while ${machine.state}`); return false; }
    if (!name) { setError('Please enter your name'); ui.name.focus(); return false; }
    ui.name.value = name;
    pendingName = name;
    clearMessages();
    machine.go('registering');
    try { await connect(); } catch (_) { return false; } // onDisconnected already reported it
    if (machine.state !== 'registering') return false;
    return send({ id: 'register', name });
  }

  async function call(peer) {
    peer = String(peer ?? ui.peer.value).trim();
    if (machine.state !== 'idle') { setError(`Cannot call while ${machine.state}`); return false; }
    if (!peer) { setError('Please enter the name of the person to call'); ui.peer.focus(); return false; }
    ui.peer.value = peer;
    clearMessages();
    const s = newSession('caller', peer);
    session = s;
    machine.go('calling');
    let sdp;
    try { sdp = await prepareOffer(s); } catch (err) {
      if (s === session) failSetup(s, err);
      return false;
    }
    if (!send({ id: 'call', from: myName, to: peer, sdpOffer: sdp })) { teardown(s); machine.go('idle'); return false; }
    markSignalled(s);
    if (s.media && s.media.note) setNotice(s.media.note);
    return true;
  }

  async function accept() {
    const s = session;
    if (machine.state !== 'incoming' || !s) { setError('There is no incoming call to accept'); return false; }
    clearMessages();
    machine.go('connecting');
    let sdp;
    try { sdp = await prepareOffer(s, true); } catch (err) {
      if (s !== session) return false;
      send({ id: 'incomingCallResponse', from: s.peer, callResponse: 'reject', message: 'user declined' });
      failSetup(s, err);
      return false;
    }
    if (!send({ id: 'incomingCallResponse', from: s.peer, callResponse: 'accept', sdpOffer: sdp })) {
      teardown(s); machine.go('idle'); return false;
    }
    markSignalled(s);
    const m = s.media;
    if (m && !m.stream) setNotice(`${m.note}. You can see and hear ${s.peer}, but ${s.peer} cannot see or hear you`);
    else if (m && m.note) setNotice(m.note);
    return true;
  }

  function reject() {
    const s = session;
    if (machine.state !== 'incoming' || !s) { setError('There is no incoming call to reject'); return false; }
    send({ id: 'incomingCallResponse', from: s.peer, callResponse: 'reject', message: 'user declined' });
    teardown(s);
    machine.go('idle');
    setNotice(`You declined the call from ${s.peer}`);
    return true;
  }

  function hangup() {
    const st = machine.state;
    const s = session;
    if (st === 'incoming') return reject();
    if (!s || !CALL_STATES.includes(st)) return false;
    if (s.pc && s.signalled) {
      send({ id: 'stop' });
    } else if (s.role === 'callee') {
      // Still preparing media: our accept was never sent, so decline instead.
      send({ id: 'incomingCallResponse', from: s.peer, callResponse: 'reject', message: 'user declined' });
    }
    teardown(s);
    machine.go('idle');
    setNotice(st === 'calling' ? `You cancelled the call to ${s.peer}` : `You ended the call with ${s.peer}`);
    return true;
  }

  // ---------------------------------------------------------------- wiring
  ui.register.addEventListener('click', () => register(ui.name.value));
  ui.call.addEventListener('click', () => call(ui.peer.value));
  ui.hangup.addEventListener('click', () => hangup());
  ui.accept.addEventListener('click', () => accept());
  ui.reject.addEventListener('click', () => reject());
  ui.name.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.isComposing) { e.preventDefault(); register(ui.name.value); }
  });
  ui.peer.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.isComposing) { e.preventDefault(); call(ui.peer.value); }
  });
  // The incoming-call dialog: Enter accepts (or presses the focused
  // button), Escape rejects, Tab stays inside.
  document.addEventListener('keydown', (e) => {
    if (!ringing || e.isComposing) return;
    if (e.key === 'Escape') { e.preventDefault(); reject(); return; }
    if (e.key === 'Enter') {
      e.preventDefault();
      if (document.activeElement === ui.reject) reject(); else accept();
      return;
    }
    if (e.key === 'Tab') {
      e.preventDefault();
      (document.activeElement === ui.accept ? ui.reject : ui.accept).focus();
    }
  }, true);
  ui.remote.addEventListener('click', () => {
    if (ui.remote.muted && ui.remote.srcObject) { ui.remote.muted = false; ui.remote.play().catch(() => {}); setInfo(defaultInfo(machine.state)); }
  });

  const api = {
    autoAnswer: /[?&]autoanswer=(1|true|yes)\b/i.test(location.search),
    register, call, accept, reject, hangup,
  };
  Object.defineProperties(api, {
    state: { get: () => machine.state, enumerable: true },
    pc: { get: () => (session && session.pc) || null, enumerable: true },
    lastError: { get: () => lastError, enumerable: true },
    notice: { get: () => notice, enumerable: true },
    name: { get: () => myName, enumerable: true },
    peer: { get: () => (session ? session.peer : ''), enumerable: true },
  });
  window.one2one = api;

  // Names are limited in characters (code points), as the server counts
  // them: the `maxlength` attribute counts UTF-16 units and would cut 40
  // emoji to 32.
  for (const el of document.querySelectorAll('input[data-max-chars]')) {
    const max = Number(el.dataset.maxChars);
    el.addEventListener('input', () => {
      const chars = [...el.value];
      if (chars.length > max) el.value = chars.slice(0, max).join('');
    });
  }

  machine.go('unregistered');
  if (mediaUnavailable()) setError(HTTPS_NEEDED);
})();
