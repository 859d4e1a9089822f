/* one2one browser client: one-to-one video calls over a JSON WebSocket. */
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const ui = {
    name: $('name'), register: $('register'), peer: $('peer'), call: $('call'),
    hangup: $('hangup'), incoming: $('incoming'), caller: $('incoming-caller'),
    accept: $('accept'), reject: $('reject'), local: $('local'), remote: $('remote'),
    stState: $('status-state'), stMsg: $('status-msg'), stErr: $('status-error'),
  };

  const MEDIA_CONSTRAINTS = { audio: true, video: { width: 640, height: 480 } };
  const CALL_STATES = ['calling', 'connecting', 'incall'];

  // ---------------------------------------------------------------- state machine
  const machine = {
    state: 'unregistered',
    labels: {
      unregistered: 'Not registered', registering: 'Registering…', idle: 'Ready',
      calling: 'Calling…', incoming: 'Incoming call', connecting: 'Connecting…', incall: 'In call',
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
  let lastError = '';
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
      case 'incall': return `In call with ${peer}`;
      default: return '';
    }
  }

  function setInfo(text) { info = text; render(); }
  function setError(text) { lastError = String(text || ''); if (lastError) console.warn('one2one:', lastError); render(); }
  function clearError() { lastError = ''; render(); }

  function render() {
    const st = machine.state;
    document.body.dataset.state = st;
    ui.stState.textContent = st;
    ui.stState.title = machine.labels[st] || st;
    ui.stState.dataset.state = st;
    ui.stMsg.textContent = info;
    ui.stErr.textContent = lastError ? `Error: ${lastError}` : '';
    ui.stErr.hidden = !lastError;
    ui.name.disabled = st !== 'unregistered';
    ui.register.disabled = st !== 'unregistered';
    ui.peer.disabled = !['unregistered', 'registering', 'idle'].includes(st);
    ui.call.disabled = st !== 'idle';
    ui.hangup.disabled = !CALL_STATES.includes(st);
    ui.hangup.textContent = st === 'calling' ? 'Cancel' : 'Hang up';
    const ringing = st === 'incoming' && !!session;
    ui.caller.textContent = ringing ? session.peer : '';
    ui.incoming.hidden = !ringing;
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
      sock.onclose = () => {
        if (sock !== ws) return;
        ws = null;
        onDisconnected(opened);
        if (!opened) reject(new Error('connection failed'));
      };
    });
  }

  function send(msg) {
    if (!ws || ws.readyState !== WebSocket.OPEN) { setError('Not connected to server'); return false; }
    try { ws.send(JSON.stringify(msg)); return true; } catch (err) { setError(`Send failed: ${err.message}`); return false; }
  }

  function onDisconnected(wasOpen) {
    teardown();
    myName = '';
    machine.go('unregistered', 'Press Register to reconnect');
    setError(wasOpen ? 'Disconnected from server' : 'Disconnected from server (could not connect)');
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
      case 'error': return setError(msg.message || 'Server error');
      default: console.log('one2one: unknown message ignored', msg);
    }
  }

  function onRegisterResponse(msg) {
    if (machine.state !== 'registering') { console.log('one2one: stray registerResponse', msg); return; }
    if (msg.response === 'accepted') {
      myName = pendingName;
      machine.go('idle');
      getIceServers(); // warm the cache
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
      setError(describeRejection(msg.message, s.peer));
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
    teardown();
    machine.go('idle', msg.message ? `Call ended: ${msg.message}` : 'Call ended');
  }

  function onRemoteCandidate(msg) {
    const s = session;
    const c = msg.candidate;
    if (!s || !s.pc || !c || !c.candidate) return; // no call (or end-of-candidates): ignore
    const init = { candidate: c.candidate, sdpMid: c.sdpMid ?? null, sdpMLineIndex: c.sdpMLineIndex ?? null };
    if (s.remoteSet) addRemoteCandidate(s, init);
    else s.pendingRemote.push(init);
  }

  function describeRejection(message, peer) {
    const m = String(message || '').trim();
    if (/not registered|unknown|not found/i.test(m)) return `Unknown user: ${peer} is not registered`;
    if (/declin/i.test(m)) return `Call declined: ${peer} declined the call`;
    if (/bus+y/i.test(m)) return `User busy: ${peer} is busy`;
    if (/no answer|timeout|timed out/i.test(m)) return `No answer from ${peer}`;
    return m ? `Call rejected: ${m}` : 'Call rejected';
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
      signalled: false, pendingRemote: [], pendingLocal: [] };
  }

  // getUserMedia + RTCPeerConnection + local offer. Returns the offer SDP.
  // Throws; errors from getUserMedia carry `media: true`. Callers must check
  // `s === session` after awaiting, since the call may have been torn down.
  async function prepareOffer(s) {
    let stream;
    try {
      if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
        throw Object.assign(new Error('getUserMedia unavailable (page must be served over HTTPS)'), { name: 'NotSupportedError' });
      }
      stream = await navigator.mediaDevices.getUserMedia(MEDIA_CONSTRAINTS);
    } catch (err) {
      throw Object.assign(new Error(err.message || String(err)), { name: err.name || 'Error', media: true });
    }
    if (s !== session) { stopStream(stream); throw new Error('aborted'); }
    s.stream = stream;
    ui.local.muted = true;
    ui.local.srcObject = stream;
    ui.local.play().catch(() => {});

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
    };
    stream.getTracks().forEach((track) => pc.addTrack(track, stream));
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

  async function applyAnswer(s, sdp) {
    if (machine.state === 'calling') machine.go('connecting');
    try {
      if (!sdp) throw new Error('server sent no SDP answer');
      await s.pc.setRemoteDescription({ type: 'answer', sdp });
      if (s !== session) return;
      s.remoteSet = true;
      s.pendingRemote.splice(0).forEach((c) => addRemoteCandidate(s, c));
      machine.go('incall');
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
      pc.onicecandidate = pc.ontrack = pc.oniceconnectionstatechange = null;
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
    setError(err.media ? `No camera or microphone available: ${err.name}` : `Call setup failed: ${err.message || err}`);
  }

  // ---------------------------------------------------------------- user actions
  async function register(name) {
    name = String(name ?? ui.name.value).trim();
    if (machine.state !== 'unregistered') { setError(`Cannot register while ${machine.state}`); return false; }
    if (!name) { setError('Please enter your name'); ui.name.focus(); return false; }
    ui.name.value = name;
    pendingName = name;
    clearError();
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
    clearError();
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
    return true;
  }

  async function accept() {
    const s = session;
    if (machine.state !== 'incoming' || !s) { setError('There is no incoming call to accept'); return false; }
    clearError();
    machine.go('connecting');
    let sdp;
    try { sdp = await prepareOffer(s); } catch (err) {
      if (s !== session) return false;
      send({ id: 'incomingCallResponse', from: s.peer, callResponse: 'reject', message: 'user declined' });
      failSetup(s, err);
      return false;
    }
    if (!send({ id: 'incomingCallResponse', from: s.peer, callResponse: 'accept', sdpOffer: sdp })) {
      teardown(s); machine.go('idle'); return false;
    }
    markSignalled(s);
    return true;
  }

  function reject() {
    const s = session;
    if (machine.state !== 'incoming' || !s) { setError('There is no incoming call to reject'); return false; }
    send({ id: 'incomingCallResponse', from: s.peer, callResponse: 'reject', message: 'user declined' });
    teardown(s);
    machine.go('idle', `Rejected call from ${s.peer}`);
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
    machine.go('idle', st === 'calling' ? `Cancelled call to ${s.peer}` : `Call with ${s.peer} ended`);
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
    name: { get: () => myName, enumerable: true },
    peer: { get: () => (session ? session.peer : ''), enumerable: true },
  });
  window.one2one = api;

  machine.go('unregistered');
})();
