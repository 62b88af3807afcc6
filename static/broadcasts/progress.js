// A broadcast's live progress page (templates/admin/broadcasts/broadcast/progress.html).
import {Live} from "../inbox/live.js";

const boot = JSON.parse(document.getElementById("bc-live-data").textContent);
const {labels, states} = boot;
const $ = (id) => document.getElementById(id);
const number = (n) => Number(n || 0).toLocaleString();

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 60) return `${seconds} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${seconds % 60} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
}

function reasons(tbody, rows) {
  rows = rows && rows.length ? rows : [{reason: "—", count: null}];
  tbody.replaceChildren(...rows.map((row) => {
    const tr = document.createElement("tr");
    for (const text of [row.reason, row.count === null ? "" : number(row.count)]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(td);
    }
    return tr;
  }));
}

// Statuses only climb (sent < delivered < read), so a read message was also delivered and sent.
function render(stats) {
  const c = stats.counts || {};
  const read = c.read || 0, delivered = (c.delivered || 0) + read, sent = (c.sent || 0) + delivered;
  const left = (c.queued || 0) + (c.sending || 0), total = stats.total || 0;
  $("bc-state").textContent = states[stats.state] || stats.state;
  $("bc-sent").textContent = number(sent);
  $("bc-delivered").textContent = number(delivered);
  $("bc-read").textContent = number(read);
  $("bc-failed").textContent = number(c.failed);
  $("bc-replied").textContent = number(stats.replied);
  $("bc-converted").textContent = number(stats.converted);
  $("bc-queued").textContent = number(left);
  $("bc-skipped").textContent = number(c.skipped);
  $("bc-rate").textContent = Number(stats.rate || 0).toLocaleString();
  $("bc-eta").textContent = duration(stats.eta_seconds);
  $("bc-bar").style.width = total ? `${Math.round(100 * (total - left) / total)}%` : "0";
  $("bc-done").textContent = `${number(total - left)} / ${number(total)}`;
  reasons($("bc-skipped-reasons"), stats.skipped_by_reason);
  reasons($("bc-failed-reasons"), stats.failed_by_reason);
}

async function reload() {
  const response = await fetch(boot.stats_url, {credentials: "same-origin", headers: {Accept: "application/json"}});
  if (response.ok) render(await response.json());
}

render(boot.stats);
const live = new Live({
  workspace: boot.workspace,
  onEvent: (event) => {
    if (event.type === "broadcast.progress" && event.payload.broadcast_id === boot.broadcast_id) render(event.payload);
  },
  // Each (re)connection loads the figures once: whatever happened while the socket was down is in them.
  onState: (state) => {
    $("bc-live").dataset.state = state;
    $("bc-live").textContent = labels[state] || state;
    if (state === "online") reload();
  },
  onResyncOverflow: reload,
});
live.connect();
