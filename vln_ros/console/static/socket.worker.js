// The console's WebSocket, owned by a Web Worker: the heartbeat that keeps control alive is sent from this
// thread's own timer, so a stall of the page's main thread (a huge paste laid out, a slow phone, a long
// garbage collection) cannot stop it. A page that is really frozen must still lose control: the main thread
// says it is alive every MAIN_ALIVE_MS, and heartbeats stop once it has been silent for MAIN_STALL_LIMIT_MS
// (then the server's heartbeat_timeout_s runs out: control lost, e-stop, as for a closed page). A hidden page
// sends none either (the page holding control must stay in front, as before the worker).
//
// From the page: {op: 'connect', url} | {op: 'send', text} | {op: 'heartbeat', on, periodMs} |
//                {op: 'visible', on} | {op: 'close', code, reason} | {op: 'alive'} (any message counts).
// To the page:   {ev: 'open'} | {ev: 'text', data} | {ev: 'binary', data} (the buffer is transferred) |
//                {ev: 'close', code, reason}.
'use strict';

const MAIN_STALL_LIMIT_MS = 5000;
let ws = null;
let heartbeatTimer = null;
let mainSeenAt = performance.now();
let visible = true;

function stopHeartbeat() {
  if (heartbeatTimer !== null) clearInterval(heartbeatTimer);
  heartbeatTimer = null;
}

function open(url) {
  if (ws) ws.close(1000, 'reconnecting');
  stopHeartbeat();
  const sock = new WebSocket(url);
  sock.binaryType = 'arraybuffer';
  ws = sock;
  sock.onopen = () => postMessage({ ev: 'open' });
  sock.onmessage = (e) => {
    if (typeof e.data === 'string') postMessage({ ev: 'text', data: e.data });
    else postMessage({ ev: 'binary', data: e.data }, [e.data]);
  };
  sock.onclose = (e) => {
    if (ws !== sock) return;
    ws = null;
    stopHeartbeat();   // control ends with the socket; a new one starts without it
    postMessage({ ev: 'close', code: e.code, reason: e.reason });
  };
}

function send(text) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(text);
}

onmessage = (e) => {
  const m = e.data || {};
  mainSeenAt = performance.now();
  switch (m.op) {
    case 'connect': open(m.url); break;
    case 'send': send(m.text); break;
    case 'heartbeat':
      stopHeartbeat();
      if (m.on) {
        heartbeatTimer = setInterval(() => {
          if (visible && performance.now() - mainSeenAt <= MAIN_STALL_LIMIT_MS) send('{"type":"heartbeat"}');
        }, Math.max(20, Number(m.periodMs) || 200));
      }
      break;
    case 'visible': visible = !!m.on; break;
    case 'close': if (ws) ws.close(m.code || 1000, m.reason || ''); break;
    default: break;
  }
};
