// The operator console page: no framework, no build step, no external URLs.
// Everything from the robot or the user goes into the page with textContent, never innerHTML.
'use strict';

(() => {
  const scriptStartedMs = performance.now();   // for the console bench's breakdown of the first image
  const $ = (id) => document.getElementById(id);
  // [token] The server answered ?token= with an HttpOnly session cookie (routes.py): take the token out of the
  // address bar and the history entry; the assets, a reload and the socket authenticate by the cookie.
  if (new URLSearchParams(location.search).has('token')) {
    const clean = new URL(location.href);
    clean.searchParams.delete('token');
    history.replaceState(history.state, '', clean.pathname + clean.search + clean.hash);
  }
  const LEVELS = ['ok', 'warn', 'error', 'stale'];
  const EVENTS_MAX = 50;      // task events (set, switched, stopped, failed): kept apart from the plans
  const PLANS_MAX = 10;       // one entry per plan: they come every second or so
  const STALE_FLOOR_S = 0.5;  // a field is stale past twice its period, and never sooner (jitter, not silence)
  const MAIN_ALIVE_MS = 250;  // tells the socket worker this thread runs (it stops heartbeats if not)
  const nowS = () => performance.now() / 1000;   // the page's monotonic clock: ages never use Date.now()

  // What arrived and what was shown, for browser tests and curious operators (times: seconds since the epoch).
  const vc = window.vlnConsole = {
    connected: false, connects: 0, page: null,
    imagesReceived: 0, imagesShown: 0, imagesDroppedInPage: 0,
    lastImageStamp: null, lastImageShownAt: null, lastImageLatencyS: null, firstImageShownAt: null,
    firstImageSource: null,   // 'page' (in the page's own answer) or 'socket'
    firstImagePaintedAt: null,   // the page's image on the screen (Element Timing; it waits for the stylesheet)
    pageImage: null,             // whether the page's own answer carried an image (known once the page is parsed)
    scriptStartedMs,          // when this script started, ms since the page's navigation start
    planCount: 0, statusCount: 0, kinds: {}, last: {}, replies: [], stale: {},
    hasControl: false, controlHeld: false, viewers: 0, estopEngaged: null, estopClickedAt: null,
    send: (msg) => send(msg),
  };

  let worker = null;       // socket.worker.js: owns the WebSocket and sends the heartbeats
  let ready = false;       // the page's elements exist (this script runs in <head>, before them)
  const early = [];        // what the worker said before that
  let open = false;
  let backoffMs = 500;
  let heartbeating = false;
  let heartbeatMs = 200;
  const heardAt = {};      // kind -> when the server received it, on nowS()'s clock (its age_s subtracted)
  let limits = null;
  let lastTask = { state: null, taskId: null };

  // -- the socket ------------------------------------------------------------------------------------------
  function socketUrl() {
    const url = new URL('ws', location.href);
    url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
    url.search = '';   // [token] the cookie authenticates the socket
    url.hash = '';
    return url.toString();
  }

  function startWorker() {
    const url = new URL('static/socket.worker.js', location.href);
    url.search = '';   // [token] the cookie authenticates the worker's script, as the page's assets
    url.hash = '';
    worker = new Worker(url.toString());
    worker.onmessage = (e) => { if (ready) fromWorker(e.data || {}); else early.push(e.data || {}); };
    worker.onerror = (e) => setConnection('disconnected', `socket worker failed: ${e.message || e}`);
    setInterval(() => worker.postMessage({ op: 'alive' }), MAIN_ALIVE_MS);
    // A hidden tab stops the heartbeats (control lost, e-stop), as when the browser slowed this thread's
    // timers: the page holding control must stay in front.
    const visibility = () => worker.postMessage({ op: 'visible', on: !document.hidden });
    document.addEventListener('visibilitychange', visibility);
    visibility();
  }

  function fromWorker(m) {
    if (m.ev === 'text') onText(m.data);
    else if (m.ev === 'binary') onImage(m.data);
    else if (m.ev === 'open') onOpen();
    else if (m.ev === 'close') onClose(m);
  }

  function connect() {
    setConnection('connecting', 'connecting…');
    worker.postMessage({ op: 'connect', url: socketUrl() });
  }

  function onOpen() {
    open = true;
    backoffMs = 500;
    vc.connected = true;
    vc.connects += 1;
    setConnection('connected', 'connected');
    refreshAges();
  }

  function onClose(ev) {
    open = false;
    vc.connected = false;
    setControl(false, false);
    scheduleReconnect(ev.reason || (ev.code === 1006 ? 'connection lost' : 'closed ' + ev.code));
  }

  function scheduleReconnect(why) {
    const delay = Math.min(backoffMs, 5000) * (0.8 + 0.4 * Math.random());
    backoffMs = Math.min(backoffMs * 2, 5000);
    setConnection('disconnected', `disconnected (${why}); retry in ${(delay / 1000).toFixed(1)} s — nothing shown is current; e-stop unavailable from this page`);
    updateButtons();
    refreshAges();
    setTimeout(connect, delay);
  }

  function send(msg) {
    if (!open) {
      showReply({ to: msg.type, ok: false, message: 'not connected' });
      return false;
    }
    worker.postMessage({ op: 'send', text: JSON.stringify(msg) });
    return true;
  }

  // -- from the server -------------------------------------------------------------------------------------
  function onText(text) {
    let msg;
    try { msg = JSON.parse(text); } catch { return; }
    if (!msg || typeof msg.type !== 'string') return;
    vc.kinds[msg.type] = (vc.kinds[msg.type] || 0) + 1;
    vc.last[msg.type] = msg;
    if (typeof msg.age_s === 'number') heardAt[msg.type] = nowS() - msg.age_s;
    switch (msg.type) {
      case 'hello': onHello(msg); break;
      case 'control': setControl(!!msg.mine, !!msg.held, msg.viewers); break;
      case 'reply': showReply(msg); break;
      case 'plan': onPlan(msg); break;
      case 'status': onStatus(msg); break;
      case 'cmd': onCmd(msg); break;
      case 'limits': limits = msg; showLimits(); break;
      case 'health': onHealth(msg); break;
      case 'estop': onEstop(msg); break;
      case 'guard': onGuard(msg); break;
      default: break;
    }
    scheduleRefresh();
  }

  // Ages once per frame, however many messages came (a burst on connect: the first image waited behind them).
  let refreshPending = false;
  function scheduleRefresh() {
    if (refreshPending) return;
    refreshPending = true;
    requestAnimationFrame(() => { refreshPending = false; refreshAges(); });
  }

  function onHello(msg) {
    vc.page = msg.page;
    if (typeof msg.max_instruction_chars === 'number') $('instruction').maxLength = msg.max_instruction_chars;
    if (typeof msg.heartbeat_timeout_s === 'number') {
      heartbeatMs = Math.max(50, Math.min(200, msg.heartbeat_timeout_s * 1000 / 3));
    }
  }

  // Images: newest wins in the page too (one decoding at a time, a newer one replaces the waiting one).
  let decoding = false;
  let pageImageStamp = null;   // the stamp of the image the page's own answer carried
  let waiting = null;
  let shownUrl = null;

  function onImage(buf) {
    if (!(buf instanceof ArrayBuffer) || buf.byteLength < 9) return;
    vc.imagesReceived += 1;
    const stamp = new DataView(buf).getFloat64(0, true);
    // the socket's first image is the server's newest: often the one the page's answer carried already
    if (vc.imagesReceived === 1 && Object.is(stamp, pageImageStamp)) return;
    const blob = new Blob([new Uint8Array(buf, 8)], { type: 'image/jpeg' });
    if (decoding) {
      if (waiting) vc.imagesDroppedInPage += 1;
      waiting = { stamp, blob };
      return;
    }
    showImage(stamp, blob);
  }

  // [first image] The page's own answer carries the server's newest keyframe (<img data-source="page">, a
  // data: URL): shown as the page is parsed, before this script, the socket's worker, the socket and the next
  // keyframe. This script is async (the page is parsed and painted without waiting for it), so that image may
  // have loaded before it runs: Element Timing (Chromium) says when it loaded (the moment a socket image's
  // onload marks) and when it was painted; elsewhere its load event, or init() if it came before this script.
  const hasElementTiming = () => (PerformanceObserver.supportedEntryTypes || []).includes('element');
  // Element Timing reports after the paint: a socket image may have loaded meanwhile, later than this one.
  function pageImageShown(atS, paintedAtS) {
    const img = $('image');
    if (img && vc.imagesShown === 0 && img.dataset.source === 'page') shown(img, Number(img.dataset.stamp), 'page', atS);
    if (vc.firstImageShownAt === null || atS < vc.firstImageShownAt) {
      vc.firstImageShownAt = atS;
      vc.firstImageSource = 'page';
    }
    if (paintedAtS !== undefined) vc.firstImagePaintedAt = paintedAtS;
  }
  function watchPageImage() {
    if (hasElementTiming()) {
      const observer = new PerformanceObserver((list) => {
        const e = list.getEntries().find((x) => x.identifier === 'first-keyframe');
        if (!e) return;
        observer.disconnect();
        const at = (ms) => (performance.timeOrigin + ms) / 1000;
        pageImageShown(at(e.loadTime || e.renderTime), e.renderTime ? at(e.renderTime) : undefined);
      });
      observer.observe({ type: 'element', buffered: true });
    } else {
      const onLoad = (e) => {
        // only the page's own image (a socket image's load reaches this listener before its onload)
        if (e.target.id !== 'image' || e.target.dataset.source !== 'page') return;
        document.removeEventListener('load', onLoad, true);
        pageImageShown(Date.now() / 1000);
      };
      document.addEventListener('load', onLoad, true);   // load does not bubble: caught on its way down
    }
  }

  function shown(img, stamp, source, atS) {
    const now = atS === undefined ? Date.now() / 1000 : atS;
    vc.imagesShown += 1;
    vc.lastImageStamp = stamp;
    vc.lastImageShownAt = now;
    if (vc.firstImageShownAt === null) {   // the console bench's first image
      vc.firstImageShownAt = now;
      vc.firstImageSource = source;
    }
    vc.lastImageLatencyS = now - stamp;
    img.dataset.stamp = String(stamp);
    img.dataset.shown = String(vc.imagesShown);
  }

  function showImage(stamp, blob) {
    decoding = true;
    const img = $('image');
    const url = URL.createObjectURL(blob);
    img.dataset.source = 'socket';
    const done = (ok) => {
      img.onload = img.onerror = null;
      if (ok) {
        if (shownUrl) URL.revokeObjectURL(shownUrl);
        shownUrl = url;
        shown(img, stamp, 'socket');
      } else {
        URL.revokeObjectURL(url);
      }
      decoding = false;
      if (waiting) {
        const next = waiting;
        waiting = null;
        showImage(next.stamp, next.blob);
      }
    };
    img.onload = () => done(true);
    img.onerror = () => done(false);
    img.src = url;
  }

  function showImageAge() {
    const el = $('image-age');
    if (vc.lastImageShownAt === null) return;
    const since = Date.now() / 1000 - vc.lastImageShownAt;
    const age = vc.lastImageLatencyS;
    const ageText = age !== null && age > -1 && age < 3600 ? `captured ${age.toFixed(2)} s before shown` : 'robot clock differs';
    el.textContent = `last image ${since.toFixed(1)} s ago · ${ageText} · ${vc.imagesShown} shown`;
    el.classList.toggle('stale', since > 2);
  }

  function onPlan(msg) {
    vc.planCount += 1;
    $('env').textContent = str(msg.environment) || '–';
    $('action').textContent = (str(msg.action) || '–') + (msg.stop ? ' (stop: goal reached)' : '');
    $('task-instruction').textContent = str(msg.instruction) || '–';
    $('latency').textContent = typeof msg.latency_s === 'number' ? `${(msg.latency_s * 1000).toFixed(0)} ms keyframe → plan` : '–';
    drawPlan(Array.isArray(msg.waypoints) ? msg.waypoints : []);
    addHistory('plans', PLANS_MAX, `${str(msg.action) || '(no action)'}${msg.stop ? ' — stop' : ''}`);
  }

  function onStatus(msg) {
    vc.statusCount += 1;
    const state = str(msg.state) || '?';
    const el = $('state');
    el.dataset.base = state + (msg.reason ? ` — ${str(msg.reason)}` : '');
    el.textContent = el.dataset.base;
    el.dataset.state = state.toLowerCase();
    if (msg.instruction) $('task-instruction').textContent = str(msg.instruction);
    if (state !== lastTask.state || msg.task_id !== lastTask.taskId) {
      addHistory('events', EVENTS_MAX, `${state}${msg.reason ? ': ' + str(msg.reason) : ''}${msg.instruction ? ' — “' + str(msg.instruction) + '”' : ''}`);
      lastTask = { state, taskId: msg.task_id };
    }
  }

  function onCmd(msg) {
    const lim = limits || {};
    setBar('vx', msg.vx, lim.max_linear_x, 'm/s');
    setBar('vy', msg.vy, lim.max_linear_y, 'm/s');
    setBar('wz', msg.wz, lim.max_angular_z, 'rad/s');
  }

  function setBar(name, value, limit, unit) {
    const fill = $('bar-' + name);
    const v = typeof value === 'number' ? value : 0;
    const max = typeof limit === 'number' && limit > 0 ? limit : null;
    const frac = max ? Math.min(Math.abs(v) / max, 1) : Math.min(Math.abs(v), 1);
    fill.style.width = (frac * 50).toFixed(1) + '%';
    fill.style.left = v >= 0 ? '50%' : (50 - frac * 50).toFixed(1) + '%';
    fill.classList.toggle('over', max !== null && Math.abs(v) > max * 1.001);
    $('val-' + name).textContent = `${v.toFixed(2)}${max ? ' / ' + max.toFixed(2) : ''} ${unit}`;
  }

  function showLimits() {
    $('limits').dataset.base = $('limits').textContent = `limits: vx ±${num(limits.max_linear_x)} m/s, vy ±${num(limits.max_linear_y)} m/s, wz ±${num(limits.max_angular_z)} rad/s`;
    if (vc.last.cmd) onCmd(vc.last.cmd);
  }

  function onHealth(msg) {
    renderHealth();
  }

  // Each node's line ages from the server's receipt of its last /diagnostics (its age_s in the message, plus
  // how long ago the message came): a node that died stays listed and turns stale past twice its period.
  function renderHealth() {
    const msg = vc.last.health;
    const list = $('health');
    const nodes = msg && Array.isArray(msg.nodes) ? msg.nodes : [];
    const since = ageOf('health');
    let worst = 0;
    const items = nodes.map((n) => {
      let level = Number.isInteger(n.level) && n.level >= 0 && n.level <= 3 ? n.level : 3;
      const age = typeof n.age_s === 'number' && since !== null ? n.age_s + since : null;
      const stale = !open || age === null || age > staleAfter(n.period_s);
      if (stale) level = 3;
      worst = Math.max(worst, level);
      const li = document.createElement('li');
      li.className = 'level-' + LEVELS[level];
      li.dataset.name = str(n.name);
      li.dataset.stale = String(stale);
      const label = stale ? `stale (${ageText(age)})` : LEVELS[level];
      li.textContent = `${label} · ${str(n.name)}: ${str(n.message)}`;
      return li;
    });
    list.replaceChildren(...items);
    list.dataset.level = nodes.length ? LEVELS[worst] : '';
  }

  function nodeStale(suffix) {
    // [stale, age_s] of the node whose name ends in suffix (stale when never heard)
    const msg = vc.last.health;
    const since = ageOf('health');
    const n = msg && Array.isArray(msg.nodes) ? msg.nodes.find((x) => str(x.name).endsWith(suffix)) : undefined;
    if (!n || typeof n.age_s !== 'number' || since === null) return [true, null];
    const age = n.age_s + since;
    return [age > staleAfter(n.period_s), age];
  }

  function ageOf(kind) { return heardAt[kind] === undefined ? null : nowS() - heardAt[kind]; }
  function staleAfter(periodS) { return Math.max(STALE_FLOOR_S, 2 * (typeof periodS === 'number' ? periodS : 1)); }
  function ageText(age) { return age === null ? 'not heard' : `${age.toFixed(0)} s`; }

  // Mark one field: stale when the socket is down or it was heard longer ago than twice its period.
  function markStale(field, el, stale, age) {
    vc.stale[field] = stale;
    el.classList.toggle('stale', stale);
    el.dataset.stale = String(stale);
    if (el.dataset.base === undefined) el.dataset.base = el.textContent;
    const base = el.dataset.base;
    el.textContent = stale ? `${base} — ${open ? 'stale (' + ageText(age) + ')' : 'not connected'}` : base;
  }

  function periodic(kind) {
    // [stale, age] of a kind that comes with its period_s
    const age = ageOf(kind);
    const msg = vc.last[kind];
    return [!open || age === null || age > staleAfter(msg && msg.period_s), age];
  }

  // Every field's age, re-judged on a timer and on every message.
  function refreshAges() {
    document.body.classList.toggle('offline', !open);
    renderHealth();
    if (vc.last.status) {   // the task's state is inference_node's: as fresh as that node's word
      const [stale, age] = nodeStale('inference_node');
      markStale('task', $('state'), !open || stale, age);
    }
    if (vc.last.estop) {
      const [stale, age] = periodic('estop');
      const el = $('estop-state');
      markStale('estop', el, stale, age);
      el.classList.toggle('good', !stale && !vc.estopEngaged);
      el.classList.toggle('bad', !stale && !!vc.estopEngaged);
      if (!open) el.textContent = `e-stop: unknown (not connected; last heard: ${vc.estopEngaged ? 'engaged' : 'released'})`;
    } else {
      vc.stale.estop = true;
    }
    if (vc.last.guard) {
      const [stale, age] = periodic('guard');
      markStale('guard', $('guard'), stale, age);
    }
    if (vc.last.cmd) {
      const [stale, age] = periodic('cmd');
      markStale('cmd', $('limits'), stale, age);
      $('motion').classList.toggle('stale', stale);
    }
    const planAge = ageOf('plan');
    $('plan-age').textContent = planAge === null ? 'no plan yet' : `plan received ${planAge.toFixed(1)} s ago`;
    updateButtons();
  }

  function onGuard(msg) {
    const el = $('guard');
    const near = typeof msg.nearest_m === 'number' ? `nearest ${msg.nearest_m.toFixed(2)} m` : 'nearest: none seen';
    const scale = typeof msg.scale === 'number' && msg.action !== 'free' ? ` (×${msg.scale.toFixed(2)})` : '';
    el.dataset.base = `${str(msg.action) || '?'}${scale} · ${near}${msg.source ? ' · ' + str(msg.source) : ''}`;
    el.dataset.action = str(msg.action);
    el.title = str(msg.reason);
    el.textContent = el.dataset.base;
  }

  function onEstop(msg) {
    vc.estopEngaged = !!msg.engaged;
    const el = $('estop-state');
    el.dataset.base = msg.engaged ? `e-stop ENGAGED${msg.reason ? ' (' + str(msg.reason) + ')' : ''}` : 'e-stop released';
    el.textContent = el.dataset.base;
    el.dataset.engaged = String(!!msg.engaged);
    el.classList.toggle('bad', !!msg.engaged);
    el.classList.toggle('good', !msg.engaged);
    updateButtons();
  }

  function showReply(msg) {
    vc.replies.push(msg);
    if (vc.replies.length > 20) vc.replies.shift();
    const el = $('reply');
    el.textContent = `${msg.ok ? '✓' : '✗'} ${str(msg.to) || 'message'}: ${str(msg.message)}`;
    el.className = 'reply ' + (msg.ok ? 'ok' : 'err');
    el.dataset.to = str(msg.to);
    el.dataset.ok = String(!!msg.ok);
    if (msg.to === 'instruction' && msg.ok) $('instruction').value = '';
  }

  // -- control and its heartbeat ---------------------------------------------------------------------------
  function setControl(mine, held, viewers) {
    vc.hasControl = mine;
    vc.controlHeld = held;
    if (typeof viewers === 'number') {
      vc.viewers = viewers;
      $('viewers').textContent = `${viewers} page${viewers === 1 ? '' : 's'}`;
    }
    const el = $('control');
    el.textContent = mine ? 'control: this page' : held ? 'control: another page' : 'control: nobody';
    el.dataset.state = mine ? 'mine' : held ? 'other' : 'free';
    el.classList.toggle('good', mine);
    if (mine !== heartbeating) {   // the worker sends them: a stall of this thread does not stop them
      heartbeating = mine;
      worker.postMessage({ op: 'heartbeat', on: mine, periodMs: heartbeatMs });
    }
    updateButtons();
  }

  function updateButtons() {
    const mine = open && vc.hasControl;
    $('estop').disabled = !open;
    $('take-control').disabled = !open || vc.hasControl || vc.controlHeld;
    $('release-control').disabled = !mine;
    $('send').disabled = !mine;
    $('stop-task').disabled = !mine;
    $('release').disabled = !mine || vc.estopEngaged !== true || !!vc.stale.estop;   // only when engaged
  }

  function setConnection(state, text) {
    const el = $('connection');
    if (!el) return;   // before the page's elements exist: init() shows the state
    el.textContent = text;
    el.dataset.state = state;
    el.classList.toggle('good', state === 'connected');
    el.classList.toggle('bad', state !== 'connected');
  }

  // -- history and the plan drawing ------------------------------------------------------------------------
  function addHistory(listId, max, text) {
    const li = document.createElement('li');
    li.textContent = `${new Date().toLocaleTimeString()} ${text}`;
    const list = $(listId);
    list.prepend(li);
    while (list.children.length > max) list.lastElementChild.remove();
  }

  // Waypoints are chained steps [dx, dy, dtheta, confidence] in the robot's frame (x forward, y left):
  // drawn from above, the robot at the bottom middle facing up.
  function drawPlan(waypoints) {
    const canvas = $('plan');
    const dpr = window.devicePixelRatio || 1;
    const size = canvas.clientWidth || 240;
    if (canvas.width !== Math.round(size * dpr)) {
      canvas.width = Math.round(size * dpr);
      canvas.height = Math.round(size * dpr);
    }
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, size, size);
    let x = 0, y = 0, th = 0;
    const poses = [{ x, y, th, c: 1 }];
    for (const w of waypoints) {
      if (!Array.isArray(w) || w.length < 3 || !w.slice(0, 3).every(Number.isFinite)) continue;
      const [dx, dy, dth] = w;
      x += Math.cos(th) * dx - Math.sin(th) * dy;
      y += Math.sin(th) * dx + Math.cos(th) * dy;
      th += dth;
      poses.push({ x, y, th, c: Number.isFinite(w[3]) ? Math.max(0.15, Math.min(1, w[3])) : 1 });
    }
    const extent = Math.max(1, ...poses.map((p) => Math.max(p.x, Math.abs(p.y) * 2, -p.x * 6)));
    const scale = (size * 0.8) / extent;
    const ox = size / 2, oy = size * 0.85;
    const px = (p) => [ox - p.y * scale, oy - p.x * scale];
    ctx.strokeStyle = '#3a3f4b';
    ctx.lineWidth = 1;
    for (let r = 1; r <= extent + 1e-9; r += extent > 5 ? 2 : 1) {   // 1 m rings
      ctx.beginPath();
      ctx.arc(ox, oy, r * scale, 0, 2 * Math.PI);
      ctx.stroke();
    }
    ctx.strokeStyle = '#4ea1ff';
    ctx.lineWidth = 2;
    ctx.beginPath();
    poses.forEach((p, i) => { const [u, v] = px(p); if (i) ctx.lineTo(u, v); else ctx.moveTo(u, v); });
    ctx.stroke();
    for (const p of poses.slice(1)) {
      const [u, v] = px(p);
      ctx.fillStyle = `rgba(78, 161, 255, ${p.c})`;
      ctx.beginPath();
      ctx.arc(u, v, 4, 0, 2 * Math.PI);
      ctx.fill();
      ctx.strokeStyle = `rgba(255, 255, 255, ${p.c})`;
      ctx.beginPath();
      ctx.moveTo(u, v);
      ctx.lineTo(u - Math.sin(p.th) * 10, v - Math.cos(p.th) * 10);
      ctx.stroke();
    }
    ctx.fillStyle = '#f5c542';   // the robot
    ctx.beginPath();
    ctx.moveTo(ox, oy - 9);
    ctx.lineTo(ox - 6, oy + 6);
    ctx.lineTo(ox + 6, oy + 6);
    ctx.closePath();
    ctx.fill();
    canvas.dataset.waypoints = String(poses.length - 1);
  }

  function str(v) { return v === null || v === undefined ? '' : String(v); }
  function num(v) { return typeof v === 'number' ? v.toFixed(2) : '?'; }

  // -- the controls ----------------------------------------------------------------------------------------
  function init() {
    ready = true;
    $('estop').addEventListener('click', (ev) => {
      vc.estopClickedAt = Date.now() / 1000;  // the click, for the e-stop -> zero cmd_vel benchmark
      send({ type: 'estop' });
    });
    $('release').addEventListener('click', () => {
      if (confirm('Release the e-stop? The robot may move again.')) send({ type: 'release_estop' });
    });
    $('take-control').addEventListener('click', () => send({ type: 'take_control' }));
    $('release-control').addEventListener('click', () => send({ type: 'release_control' }));
    $('stop-task').addEventListener('click', () => send({ type: 'stop_task' }));
    $('instruction-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const text = $('instruction').value.trim();
      if (!text) { showReply({ to: 'instruction', ok: false, message: 'type an instruction first' }); return; }
      send({ type: 'instruction', text });
    });
    $('instruction').addEventListener('keydown', (ev) => {   // Enter sends; Shift+Enter: new line; not mid-IME
      if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing && ev.keyCode !== 229) {
        ev.preventDefault();
        if (!$('send').disabled) $('instruction-form').requestSubmit();
      }
    });
    window.addEventListener('pagehide', () => { if (worker) worker.postMessage({ op: 'close', code: 1001, reason: 'page closed' }); });
    setInterval(showImageAge, 250);
    setInterval(refreshAges, 250);
    drawPlan([]);
    setConnection(open ? 'connected' : 'connecting', open ? 'connected' : 'connecting…');
    updateButtons();
    const img = $('image');
    if (img.dataset.source === 'page') pageImageStamp = Number(img.dataset.stamp);
    vc.pageImage = img.dataset.source === 'page';
    if (img.complete && img.naturalWidth > 0 && !hasElementTiming()) {
      pageImageShown(Date.now() / 1000);   // loaded before this script ran, where no Element Timing says when
    }
    early.splice(0).forEach(fromWorker);
  }

  // The socket first, from <head> (async: the page is parsed and its image shown without waiting for this
  // script): the worker's start-up and the connection overlap the page's parsing and first layout.
  watchPageImage();
  startWorker();
  connect();
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
