// The dashboard's live panel: refetched (debounced) whenever the workspace's websocket — the
// inbox's — reports a conversation or an agent's status changing, and every 30 s so waits tick on.
// It never pings: an open dashboard must not keep a supervisor "present" for routing.
const panel = document.getElementById("live-panel");
const DEBOUNCE_MS = 800;
const LIVE_EVENTS = new Set(["conversation.updated", "agent.status"]);
let timer = null;
let retry = 0;

function duration(seconds) {
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return minutes < 10 && seconds % 60 ? `${minutes} min ${seconds % 60} s` : `${minutes} min`;
  const hours = Math.floor(minutes / 60);
  return minutes % 60 ? `${hours} h ${minutes % 60} min` : `${hours} h`;
}

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text;
  return td;
}

function rows(body, items, render, empty) {
  body.replaceChildren(...(items.length ? items.map((item) => {
    const tr = document.createElement("tr");
    tr.append(...render(item));
    return tr;
  }) : [empty]));
}

function render(data) {
  const $ = (name) => panel.querySelector(`[data-live="${name}"]`);
  $("waiting").textContent = data.waiting;
  $("longest").textContent = duration(data.longest_wait_seconds);
  $("online").textContent = data.online;
  $("away").textContent = data.away;
  const none = (text, span) => { const tr = document.createElement("tr"); const td = cell(text); td.colSpan = span; td.className = "muted"; tr.append(td); return tr; };
  rows($("teams"), data.teams, (t) => [cell(t.name), cell(t.waiting), cell(t.queued), cell(duration(t.longest_wait_seconds))], none("—", 4));
  rows($("agents"), data.agents, (a) => {
    const status = cell("");
    const badge = document.createElement("span");
    badge.className = `status ${a.status}`;
    badge.textContent = a.status;
    status.append(badge);
    return [cell(a.name), status, cell(`${a.load} / ${a.capacity}`)];
  }, none("—", 3));
  panel.dataset.updated = data.at;
}

async function refresh() {
  const response = await fetch(panel.dataset.url, {headers: {Accept: "application/json"}, credentials: "same-origin"});
  if (response.ok) render(await response.json());
}

function soon() {
  clearTimeout(timer);
  timer = setTimeout(refresh, DEBOUNCE_MS);
}

function setState(state) {
  const dot = document.getElementById("live-connection");
  dot.className = `connection ${state}`;
  panel.dataset.socket = state;
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/ws/?workspace=${encodeURIComponent(panel.dataset.workspace)}`);
  setState("connecting");
  ws.onmessage = (message) => {
    const frame = JSON.parse(message.data);
    if (frame.type === "hello") { retry = 0; setState("online"); soon(); return; }  // after a drop: catch up
    const events = frame.type === "events" ? frame.events : [frame];  // a batch comes in one frame
    if (events.some((event) => LIVE_EVENTS.has(event.type))) soon();
  };
  ws.onclose = () => {
    setState("offline");
    retry = Math.min(retry + 1, 5);
    setTimeout(connect, 400 * 2 ** retry);
  };
}

if (panel) {
  connect();
  setInterval(refresh, 30000);
  window.parleyAnalytics = {refresh};  // for the browser tests
}
