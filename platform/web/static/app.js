// Kestrel dashboard: live map, emergency banner, device list, device page
// and config view. Data from /web/* and /api/v1/*, live over /web/events
// (server-sent events). No build step: plain ES5-compatible script.
'use strict';
var K = { devices: {}, markers: {}, session: null, emergencies: [], sort: { k: 'device', dir: 1 }, metrics: {} };
var STALE_MS = 15 * 60 * 1000, FRESH_MS = 2 * 60 * 1000;
var COLOURS = { moving: '#1a9850', stopped: '#2b6cb0', stale: '#d69e2e', offline: '#718096', privacy: '#805ad5', emergency: '#e53e3e' };

function $(id) { return document.getElementById(id); }
function key(d) { return d.fleet + '/' + d.device; }
function esc(s) { return String(s == null ? '' : s).replace(/[&<>"']/g, function (c) { return '&#' + c.charCodeAt(0) + ';'; }); }
function api(path, opt) {
  opt = opt || {};
  opt.credentials = 'same-origin';
  opt.headers = opt.headers || {};
  if (opt.method && opt.method !== 'GET') opt.headers['X-CSRF-Token'] = K.session.csrf;
  return fetch(path, opt).then(function (r) {
    if (r.status === 401) { location.href = '/login'; throw new Error('logged out'); }
    if (!r.ok) throw new Error(path + ': ' + r.status);
    return r.status === 204 ? null : r.json();
  });
}
function age(t) {
  if (!t) return '';
  return secsText(Math.max(0, Math.round((Date.now() - Date.parse(t)) / 1000)));
}
// The device's status columns (platform.DeviceStatus), from its last state message.
var ACT = ['GSM', 'GSM', 'UMTS', 'EDGE', 'HSDPA', 'HSUPA', 'HSPA', 'LTE', 'EC-GSM', 'NB-IoT', 'LTE/5GC', 'NR', 'NG-RAN', 'EN-DC'];
var REG = ['not registered', 'home', 'searching', 'denied', 'unknown', 'roaming', 'SMS only', 'SMS only, roaming', 'emergency only', 'home', 'roaming', 'RLOS'];
function privacyOf(d) { return d.privacy_mode || ''; }
// The device key against its enrolment (docs/evidence.md): a changed key is flagged.
function keyText(d) {
  if (d.key_status !== 'changed') return d.key_status || '';
  return 'CHANGED: flagged, not trusted until re-enrolled' + (d.key_changed_seq != null ? ' (from seq ' + d.key_changed_seq + ')' : '');
}
function batteryText(d) {
  if (d.battery_percent == null) return '';
  var st = (d.battery_status || '').toLowerCase();
  return d.battery_percent + ' %' + (st && st !== 'discharging' && st !== 'unknown' ? ' ' + st : '');
}
function radioText(d) {
  if (d.radio_registered == null && d.radio_profile == null) return '';
  var parts = [];
  if (d.radio_act != null) parts.push(ACT[d.radio_act] || 'AcT ' + d.radio_act);
  else if (d.radio_profile) parts.push(d.radio_profile.toUpperCase());
  if (d.radio_registered != null) parts.push(REG[d.radio_registered] || 'stat ' + d.radio_registered);
  if (d.radio_rssi) parts.push(d.radio_rssi + ' dBm');
  return parts.join(' · ');
}
function bytesText(n) { return n < 1024 ? n + ' B' : n < 1048576 ? (n / 1024).toFixed(1) + ' kB' : (n / 1048576).toFixed(1) + ' MB'; }
function spoolText(d) {
  if (d.spool_records == null) return '';
  var t = d.spool_records + ' rec';
  if (d.spool_bytes != null) t += ' · ' + bytesText(d.spool_bytes);
  if (d.spool_records > 0 && d.spool_oldest_s != null) t += ' · oldest ' + secsText(d.spool_oldest_s);
  return t;
}
function secsText(s) { return s < 60 ? s + ' s' : s < 3600 ? Math.round(s / 60) + ' min' : s < 86400 ? Math.round(s / 3600) + ' h' : Math.round(s / 86400) + ' d'; }
// status is the colour class: emergency, offline, privacy, stale, moving (the
// fix moved since the previous update) or stopped.
function status(d) {
  if (K.emergencies.some(function (e) { return e.fleet === d.fleet && e.device === d.device; })) return 'emergency';
  if (d.online === false) return 'offline';
  var p = privacyOf(d);
  if (p && p !== 'off' && p !== false) return 'privacy';
  if (!d.last_fix_time || Date.now() - Date.parse(d.last_fix_time) > STALE_MS) return 'stale';
  if (d._moved && Date.now() - Date.parse(d.last_fix_time) < FRESH_MS) return 'moving';
  return 'stopped';
}

// ---- maps ----
function baseLayer(map) {
  if (K.session.tiles) {
    L.tileLayer(K.session.tiles, { maxZoom: 19, attribution: esc(K.session.attribution || '') }).addTo(map);
    return;
  }
  map.getContainer().style.background = '#cfe3f3';
  fetch('/static/world/land-110m.json', { credentials: 'same-origin' }).then(function (r) { return r.json(); }).then(function (t) {
    L.geoJSON(topoToGeo(t, 'land'), { style: { color: '#7a8b6f', weight: 1, fillColor: '#eef2e6', fillOpacity: 1 }, interactive: false }).addTo(map);
    map.attributionControl.addAttribution('Natural Earth 1:110m (public domain) via world-atlas');
  });
  L.latLngGraticule && L.latLngGraticule().addTo(map);
}
function coords(map) {
  var c = L.control({ position: 'bottomright' });
  c.onAdd = function () { var d = L.DomUtil.create('div', 'coords'); d.id = map.getContainer().id + '-coords'; return d; };
  c.addTo(map);
  map.on('mousemove', function (e) { $(map.getContainer().id + '-coords').textContent = e.latlng.lat.toFixed(5) + ', ' + e.latlng.lng.toFixed(5); });
  L.control.scale({ imperial: false }).addTo(map);
}
function makeMap(id) {
  var map = L.map(id, { preferCanvas: true, worldCopyJump: true }).setView([54, -2], 5);
  baseLayer(map);
  coords(map);
  return map;
}

function markerFor(d) {
  if (d.last_lat == null || d.last_lon == null) return;
  var k = key(d), m = K.markers[k], st = status(d);
  var style = { radius: st === 'emergency' ? 9 : 5, color: '#1a202c', weight: 1, fillColor: COLOURS[st], fillOpacity: 0.9 };
  if (!m) {
    m = K.markers[k] = L.circleMarker([d.last_lat, d.last_lon], style).addTo(K.map);
    m.on('click', function () { location.hash = '#device/' + encodeURIComponent(d.fleet) + '/' + encodeURIComponent(d.device); });
    m.bindTooltip('');
  } else {
    m.setLatLng([d.last_lat, d.last_lon]);
    m.setStyle(style);
  }
  m.setTooltipContent(esc(d.device) + ' · ' + st + ' · fix ' + age(d.last_fix_time));
}

function update(list) {
  var t0 = performance.now();
  list.forEach(function (d) {
    var old = K.devices[key(d)];
    d._moved = !!(old && (old.last_lat !== d.last_lat || old.last_lon !== d.last_lon));
    K.devices[key(d)] = d;
    markerFor(d);
  });
  K.metrics.lastUpdate = { at: Date.now(), n: list.length, ms: performance.now() - t0 };
  $('status').textContent = Object.keys(K.devices).length + ' devices';
  if (!$('page-list').hidden) renderList();
}

// ---- emergencies ----
function renderBanner() {
  var b = $('banner');
  if (!K.emergencies.length) { b.hidden = true; b.innerHTML = ''; return; }
  b.hidden = false;
  b.innerHTML = K.emergencies.map(function (e, i) {
    var pos = e.lat != null ? e.lat.toFixed(5) + ', ' + e.lon.toFixed(5) : 'position unknown';
    var ack = K.session.role === 'supervisor' ? '<button class="ack" data-i="' + i + '">Acknowledge</button>' : '<i>(a supervisor acknowledges)</i>';
    return '<div class="emergency" data-device="' + esc(e.device) + '">EMERGENCY <b>' + esc(e.device) + '</b> (' + esc(e.fleet) + ') at ' +
      esc(new Date(e.time).toISOString().replace('T', ' ').slice(0, 19)) + ' UTC · ' + pos + ' · ' + esc(e.name || e.text) + ' ' + ack +
      ' <a href="#device/' + encodeURIComponent(e.fleet) + '/' + encodeURIComponent(e.device) + '">open</a></div>';
  }).join('');
  Array.prototype.forEach.call(b.querySelectorAll('button.ack'), function (btn) {
    btn.onclick = function () {
      var e = K.emergencies[+btn.dataset.i];
      api('/web/ack', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ fleet: e.fleet, device: e.device, boot: e.boot, seq: e.seq }) })
        .then(function () { return api('/web/emergencies'); }).then(setEmergencies);
    };
  });
}
function setEmergencies(list) {
  var before = K.emergencies;
  K.emergencies = list || [];
  renderBanner();
  K.metrics.emergencyAt = Date.now();
  before.concat(K.emergencies).forEach(function (e) { var d = K.devices[e.fleet + '/' + e.device]; if (d) markerFor(d); });
}

// ---- device list ----
// row is a device's list row: the text shown (and filtered on), and the
// numbers the battery, radio, spool and age columns sort by.
function row(d) {
  var n = function (v) { return v == null ? -Infinity : v; };
  return { device: d.device, fleet: d.fleet, online: d.online == null ? '' : d.online ? 'yes' : 'no', fix: d.last_fix_time || '',
    battery: batteryText(d), radio: radioText(d), spool: spoolText(d), version: d.version || '', privacy: privacyOf(d), gaps: d.open_gaps,
    _sort: { age: d.last_fix_time ? Date.now() - Date.parse(d.last_fix_time) : Infinity, battery: n(d.battery_percent),
      radio: d.radio_rssi ? d.radio_rssi : n(null), spool: n(d.spool_records) } };
}
function sortKey(r, k) { return k in r._sort ? r._sort[k] : r[k]; }
function renderList() {
  var f = $('filter').value.toLowerCase(), s = K.sort;
  var rows = Object.keys(K.devices).map(function (k) { return { d: K.devices[k], r: row(K.devices[k]) }; })
    .filter(function (x) { var r = x.r; return !f || [r.device, r.fleet, r.online, r.fix, r.battery, r.radio, r.spool, r.version, r.privacy].join('\n').toLowerCase().indexOf(f) >= 0; });
  rows.sort(function (a, b) { var x = sortKey(a.r, s.k), y = sortKey(b.r, s.k); return (x < y ? -1 : x > y ? 1 : 0) * s.dir; });
  $('count').textContent = rows.length + ' shown';
  $('devices').tBodies[0].innerHTML = rows.slice(0, 1000).map(function (x) {
    var r = x.r;
    return '<tr class="' + status(x.d) + '" data-device="' + esc(r.device) + '"><td><a href="#device/' + encodeURIComponent(r.fleet) + '/' + encodeURIComponent(r.device) + '">' + esc(r.device) + '</a></td><td>' + esc(r.fleet) +
      '</td><td>' + r.online + '</td><td>' + esc(r.fix.replace('T', ' ').slice(0, 19)) + '</td><td>' + age(x.d.last_fix_time) + '</td><td>' + esc(r.battery) + '</td><td>' + esc(r.radio) +
      '</td><td>' + esc(r.spool) + '</td><td>' + esc(r.version) + '</td><td>' + esc(r.privacy) + '</td><td>' + r.gaps + '</td></tr>';
  }).join('');
}

// ---- device page ----
function localInput(t) { var d = new Date(t - new Date().getTimezoneOffset() * 60000); return d.toISOString().slice(0, 19); }
function openDevice(fleet, dev) {
  K.dev = { fleet: fleet, device: dev };
  $('dev-title').textContent = dev + ' (' + fleet + ')';
  if (!$('dev-from').value) { $('dev-from').value = localInput(Date.now() - 3600e3); $('dev-to').value = localInput(Date.now() + 60e3); }
  if (!K.devmap) K.devmap = makeMap('devmap');
  setTimeout(function () { K.devmap.invalidateSize(); }, 0);
  loadDevice();
}
function loadDevice() {
  K.deviceLoaded = false;
  var from = new Date($('dev-from').value).toISOString(), to = new Date($('dev-to').value).toISOString();
  var q = 'fleet=' + encodeURIComponent(K.dev.fleet) + '&device=' + encodeURIComponent(K.dev.device) + '&from=' + from + '&to=' + to;
  Promise.all([api('/web/device?' + q), api('/api/v1/track?format=geojson&' + q)]).then(function (res) {
    var info = res[0], track = res[1];
    K.track = track.features;
    if (K.trackLayer) K.devmap.removeLayer(K.trackLayer);
    var ll = K.track.map(function (f) { return [f.geometry.coordinates[1], f.geometry.coordinates[0]]; });
    K.trackLayer = L.layerGroup([L.polyline(ll, { color: '#2b6cb0', weight: 3 })]).addTo(K.devmap);
    K.replay = L.circleMarker(ll[0] || [0, 0], { radius: 7, color: '#000', fillColor: '#e53e3e', fillOpacity: 1 }).addTo(K.trackLayer);
    if (ll.length) K.devmap.fitBounds(L.latLngBounds(ll).pad(0.2));
    $('dev-slider').max = Math.max(0, ll.length - 1); $('dev-slider').value = 0; seek(0);
    $('dev-events').innerHTML = info.events.map(function (e) {
      return '<li class="' + esc(e.priority) + '">' + esc(e.time.replace('T', ' ').slice(0, 19)) + ' ' + esc(e.type) + ' ' + esc(e.name) + ' ' + esc(e.text) + '</li>';
    }).join('') || '<li>none in range</li>';
    $('dev-gaps').innerHTML = info.gaps.map(function (g) {
      return '<li>boot ' + g.boot + ' seq ' + g.first_seq + '–' + g.last_seq + (g.open ? ' <b>open</b>' : ' closed ' + esc(g.closed)) + ' (opened ' + esc(g.opened) + ')</li>';
    }).join('') || '<li>none</li>';
    var dv = info.device, ign = dv.ignition == null ? '' : dv.ignition ? 'on' : 'off';
    $('dev-state').innerHTML = [['online', dv.online == null ? '' : dv.online ? 'yes' : 'no'], ['battery', batteryText(dv)], ['ignition', ign],
      ['radio', radioText(dv)], ['spool', spoolText(dv)], ['privacy', privacyOf(dv)], ['device key', keyText(dv)], ['version', dv.version]].map(function (kv) {
      return '<dt>' + kv[0] + '</dt><dd>' + (esc(kv[1]) || '—') + '</dd>';
    }).join('');
    $('dev-latest').innerHTML = Object.keys(info.latest || {}).map(function (k) {
      return '<dt>' + esc(k) + '</dt><dd>' + esc(JSON.stringify(info.latest[k])) + '</dd>';
    }).join('') || '<dd>no battery, radio, link, gps or thermal records in the store</dd>';
    $('dev-config').textContent = info.config ? JSON.stringify(info.config, null, 1) : 'no config/reported received';
    timeline(Date.parse(from), Date.parse(to), info.events);
    $('dev-at').textContent = ll.length + ' fixes';
    K.deviceLoaded = true;
  });
}
function timeline(t0, t1, events) {
  var tl = $('timeline'), span = Math.max(1, t1 - t0);
  var html = (K.track || []).filter(function (_, i) { return i % Math.ceil((K.track.length || 1) / 400) === 0; }).map(function (f) {
    return '<span class="tick fix" style="left:' + (100 * (Date.parse(f.properties.time) - t0) / span).toFixed(2) + '%"></span>';
  }).join('');
  html += events.map(function (e) {
    return '<span class="tick ev ' + esc(e.priority) + '" title="' + esc(e.type + ' ' + e.name) + '" style="left:' + (100 * (Date.parse(e.time) - t0) / span).toFixed(2) + '%"></span>';
  }).join('');
  tl.innerHTML = html;
}
function seek(i) {
  var f = K.track && K.track[i];
  if (!f) return;
  K.replay.setLatLng([f.geometry.coordinates[1], f.geometry.coordinates[0]]);
  $('dev-at').textContent = (i + 1) + '/' + K.track.length + ' · ' + f.properties.time;
}
function play() {
  clearInterval(K.playing);
  var i = 0, n = K.track ? K.track.length : 0;
  K.playing = setInterval(function () { if (i >= n) { clearInterval(K.playing); K.replayDone = true; return; } $('dev-slider').value = i; seek(i++); }, Math.max(5, 5000 / Math.max(1, n)));
}

// ---- config view ----
function renderConfig() {
  var devs = Object.keys(K.devices).sort().slice(0, 50);
  Promise.all(devs.map(function (k) { var d = K.devices[k]; return api('/web/device?fleet=' + encodeURIComponent(d.fleet) + '&device=' + encodeURIComponent(d.device) + '&from=1m'); }))
    .then(function (all) {
      $('config-list').innerHTML = all.map(function (x) {
        return '<details><summary>' + esc(x.device.device) + ' (' + esc(x.device.fleet) + ')' + (x.config ? '' : ' — no report') + '</summary><pre>' +
          esc(x.config ? JSON.stringify(x.config, null, 1) : '') + '</pre></details>';
      }).join('');
    });
}

// ---- routing ----
function route() {
  var h = location.hash || '#map', parts = h.slice(1).split('/');
  ['map', 'list', 'device', 'config'].forEach(function (p) { $('page-' + p).hidden = p !== parts[0]; });
  if (parts[0] === 'map') setTimeout(function () { K.map.invalidateSize(); }, 0);
  if (parts[0] === 'list') renderList();
  if (parts[0] === 'device') openDevice(decodeURIComponent(parts[1]), decodeURIComponent(parts[2]));
  if (parts[0] === 'config') renderConfig();
}

function start() {
  api('/web/session').then(function (s) {
    K.session = s;
    $('who').textContent = s.user + ' (' + s.role + ')';
    K.map = makeMap('map');
    var legend = $('legend');
    legend.innerHTML = Object.keys(COLOURS).map(function (k) { return '<span><i style="background:' + COLOURS[k] + '"></i>' + k + '</span>'; }).join('');
    var es = new EventSource('/web/events');
    es.addEventListener('devices', function (m) { update(JSON.parse(m.data)); });
    es.addEventListener('emergencies', function (m) { setEmergencies(JSON.parse(m.data)); });
    es.addEventListener('resync', function () {
      Promise.all([api('/web/devices'), api('/web/emergencies')]).then(function (r) { setEmergencies(r[1]); update(r[0].devices); });
    });
    es.onerror = function () { $('status').textContent = 'reconnecting…'; };
    es.addEventListener('hello', function () {
      var t0 = performance.now();
      Promise.all([api('/web/devices'), api('/web/emergencies')]).then(function (r) {
        setEmergencies(r[1]);
        update(r[0].devices);
        var fit = Object.keys(K.markers).map(function (k) { return K.markers[k].getLatLng(); });
        if (fit.length && !K.fitted) { K.map.fitBounds(L.latLngBounds(fit).pad(0.1)); K.fitted = true; }
        requestAnimationFrame(function () { K.metrics.firstPaint = { ms: performance.now() - t0, sinceNav: performance.now(), n: fit.length }; });
      });
    });
    route();
  });
  window.addEventListener('hashchange', route);
  $('filter').addEventListener('input', renderList);
  Array.prototype.forEach.call(document.querySelectorAll('#devices th'), function (th) {
    th.onclick = function () { K.sort = { k: th.dataset.k, dir: K.sort.k === th.dataset.k ? -K.sort.dir : 1 }; renderList(); };
  });
  $('dev-load').onclick = loadDevice;
  $('dev-play').onclick = play;
  $('dev-slider').oninput = function () { seek(+this.value); };
  $('logout').onclick = function () { api('/logout', { method: 'POST' }).then(function () { location.href = '/login'; }); };
}
start();
