// The admin's "Try it" page for a workflow (templates/admin/workflows/workflow/try.html): the
// person writes as the customer, the page polls the conversation and the run's state.
const urls = JSON.parse(document.getElementById("tryit-urls").textContent);
let after = JSON.parse(document.getElementById("tryit-after").textContent);
const csrf = document.querySelector("#tryit-form [name=csrfmiddlewaretoken]").value;
const box = document.getElementById("tryit-messages");
const errorLine = document.getElementById("tryit-error");
let lastShown = "";

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  Object.entries(attrs || {}).forEach(([k, v]) => node.setAttribute(k, v));
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

async function post(url, data) {
  errorLine.textContent = "";
  const response = await fetch(url, {
    method: "POST",
    headers: {"X-CSRFToken": csrf, "Accept": "application/json"},
    body: new URLSearchParams(data || {}),
    credentials: "same-origin",
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) errorLine.textContent = body.detail || ("Error " + response.status);
  return body;
}

function bubble(message) {
  const outbound = message.direction === "out";
  let cls = outbound ? "tryit-out" : "tryit-in";
  if (message.kind === "event") cls = "tryit-event";
  if (message.kind === "note") cls = "tryit-note";
  const node = el("div", {"class": "tryit-bubble " + cls});
  if (outbound && message.kind !== "event") node.appendChild(el("span", {"class": "tryit-who"}, message.sender_kind));
  node.appendChild(document.createTextNode(message.text || (message.kind === "interactive" ? "" : "[" + message.kind + "]")));
  if (message.options.length) {
    const options = el("div", {"class": "tryit-options"});
    message.options.forEach((option) => {
      const button = el("button", {"type": "button"}, option.title);
      button.addEventListener("click", () => send({option: option.id}));
      options.appendChild(button);
    });
    node.appendChild(options);
  }
  return node;
}

function rows(table, pairs) {
  table.replaceChildren();
  pairs.forEach(([name, value, pre]) => {
    const tr = el("tr");
    tr.appendChild(el("th", {}, name));
    const td = el("td");
    td.appendChild(pre ? el("pre", {}, value) : document.createTextNode(value === null || value === undefined ? "—" : value));
    tr.appendChild(td);
    table.appendChild(tr);
  });
}

function render(state) {
  const key = JSON.stringify(state.messages.map((m) => [m.id, m.state, m.text]));
  if (key !== lastShown) {
    lastShown = key;
    box.replaceChildren(...state.messages.map(bubble));
    box.scrollTop = box.scrollHeight;
  }
  const run = state.run;
  if (run) {
    const log = run.log.map((e) => `${e.step} (${e.kind}): ${e.outcome}${e.detail ? " — " + e.detail : ""}`).join("\n");
    rows(document.getElementById("tryit-run"), [
      ["workflow", `${run.workflow} v${run.version}`], ["state", run.state], ["step", run.step || "—"],
      ["outcome", run.outcome || "—"], ["steps taken", run.steps_taken],
      ["variables", JSON.stringify(run.variables, null, 2), true],
      ["waiting for", JSON.stringify(run.waiting, null, 2), true], ["log", log, true],
    ]);
  }
  const c = state.conversation;
  rows(document.getElementById("tryit-conversation"), [
    ["status", c.status], ["team", c.team], ["assigned to", c.assignee], ["language", c.language || "—"],
  ]);
}

async function poll() {
  try {
    const response = await fetch(urls.state + "?after=" + encodeURIComponent(after), {credentials: "same-origin"});
    if (response.ok) render(await response.json());
  } catch (e) { /* the next poll tries again */ }
}

async function send(data) {
  await post(urls.send, data);
  await poll();
}

document.getElementById("tryit-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = document.getElementById("tryit-text");
  const text = input.value.trim();
  if (!text) return;
  input.value = "";
  await send({text});
});
document.getElementById("tryit-restart").addEventListener("click", async () => {
  const body = await post(urls.restart);
  if (body.after !== undefined) after = body.after;
  await poll();
});
poll();
setInterval(poll, 1500);
