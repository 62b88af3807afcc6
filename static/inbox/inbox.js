// The live inbox (/inbox/): the conversation list with its views (the team queues among them) and
// filters, the customer's whole timeline across channels, the reply box, the acts on a
// conversation, the bots (workflows) an agent starts or stops, the customer panel, presence,
// notifications and keyboard shortcuts. Reads and writes go through the REST API (api.js);
// everything else arrives over the websocket (live.js).
import {api, ApiError} from "./api.js";
import {Live} from "./live.js";

const _ = window.gettext || ((text) => text);
const interpolate = window.interpolate || ((text, values) => text.replace(/%s/g, () => values.shift()));
const boot = JSON.parse(document.getElementById("inbox-data").textContent);
const $ = (selector, root = document) => root.querySelector(selector);
const $$ = (selector, root = document) => [...root.querySelectorAll(selector)];
const byId = (items) => new Map(items.map((item) => [item.id, item]));

const S = {
  me: boot.me,
  members: byId(boot.members),
  teams: byId(boot.teams),
  tags: byId(boot.tags),
  channels: byId(boot.channels),
  workflows: boot.workflows || [],  // the shortcut workflows an agent may start from the header
  view: localStorage.getItem("parley:view") || "mine",
  rows: new Map(),
  order: [],
  next: null,
  current: null,         // the open conversation (a row)
  contact: null,         // its contact, as the panel shows it
  contactConversations: new Set(),
  timeline: new Map(),   // message id -> message
  replyTo: null,
  notifications: boot.notifications,
  typing: new Map(),
};

// --- small helpers ---------------------------------------------------------------------------
function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) if (child !== null && child !== undefined) node.append(child);
  return node;
}
const channelLabel = (kind) => ({
  whatsapp: "WhatsApp", webchat: _("Web chat"), messenger: "Messenger", instagram: "Instagram",
  telegram: "Telegram", wechat: "WeChat", email: _("Email"), custom: _("App"),
}[kind] || kind);
// A link that came as data (a shop's tracking URL) is followed only when it is a web address: a
// javascript: URL would run in the inbox.
function webUrl(url) {
  try {
    return ["http:", "https:"].includes(new URL(url, location.href).protocol) ? url : null;
  } catch {
    return null;
  }
}
const memberName = (id) => (S.members.get(id) || {}).name || _("nobody");
function ago(iso) {
  if (!iso) return "";
  const minutes = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 60000));
  if (minutes < 60) return interpolate(_("%s min"), [minutes]);
  if (minutes < 48 * 60) return interpolate(_("%s h"), [Math.round(minutes / 60)]);
  return interpolate(_("%s d"), [Math.round(minutes / 1440)]);
}
function waitingClass(row) {
  if (!row.waiting_since || row.status !== "open") return "";
  const minutes = (Date.now() - Date.parse(row.waiting_since)) / 60000;
  if (minutes >= boot.workspace.reply_breach_minutes) return "late";
  if (minutes >= boot.workspace.reply_warning_minutes) return "warn";
  return "ok";
}
function showError(target, error) {
  const box = typeof target === "string" ? $(target) : target;
  const fields = error instanceof ApiError ? Object.entries(error.fields).map(([k, v]) => `${k}: ${v}`).join(" ") : "";
  box.textContent = [error.message, fields].filter(Boolean).join(" — ");
  box.hidden = false;
}

// --- the list ----------------------------------------------------------------------------------
function filters() {
  const data = new FormData($("#filters"));
  const params = new URLSearchParams({view: S.view, limit: "50"});
  if (S.view === "queue") params.set("ordering", "queued_at");  // longest waiting first
  for (const [name, value] of data.entries()) if (value) params.set(name, value);
  return params;
}

async function loadList() {
  const page = await api(`conversations/?${filters()}`);
  S.rows = new Map(page.results.map((row) => [row.id, row]));
  S.order = page.results.map((row) => row.id);
  S.next = page.next;
  sortRows();
  renderList();
}

async function loadMore() {
  if (!S.next) return;
  const page = await api(S.next);
  for (const row of page.results) if (!S.rows.has(row.id)) { S.rows.set(row.id, row); S.order.push(row.id); }
  S.next = page.next;
  sortRows();
  renderList();
}

function matchesView(row) {
  const data = Object.fromEntries(new FormData($("#filters")).entries());
  if (data.q) return S.order.includes(row.id);  // a search result set is what the server said
  if (S.view === "mine" && row.assignee_id !== S.me.membership_id) return false;
  if (S.view === "unassigned" && row.assignee_id !== null) return false;
  if (S.view === "team" && !S.me.team_ids.includes(row.team_id)) return false;
  if (S.view === "queue" && !inQueue(row)) return false;
  if (data.status && row.status !== data.status) return false;
  if (data.channel && row.channel_id !== Number(data.channel)) return false;
  if (data.team && row.team_id !== Number(data.team)) return false;
  if (data.tag && !row.tag_ids.includes(Number(data.tag))) return false;
  if (data.priority && row.priority !== data.priority) return false;
  if (data.category && row.category !== data.category) return false;
  if (data.language && row.language !== data.language) return false;
  return true;
}

// Newest activity first; the queue longest waiting first.
function sortRows() {
  const key = (id) => S.rows.get(id)[S.view === "queue" ? "queued_at" : "last_message_at"] || "";
  S.order.sort(S.view === "queue" ? (a, b) => key(a).localeCompare(key(b)) : (a, b) => key(b).localeCompare(key(a)));
}

function upsertRow(row) {
  const known = S.rows.get(row.id);
  const merged = {...(known || {}), ...row};
  if (!matchesView(merged)) {
    S.rows.delete(row.id);
    S.order = S.order.filter((id) => id !== row.id);
  } else {
    S.rows.set(row.id, merged);
    S.order = [row.id, ...S.order.filter((id) => id !== row.id)];
    sortRows();
  }
  if (S.current && S.current.id === row.id) { S.current = {...S.current, ...row}; renderHead(); }
  renderList();
}

const inQueue = (row) => Boolean(row.queued_at) && row.assignee_id === null && row.status !== "closed";
const botBadge = (row) => (row.bot ? el("span", {class: "bot", title: _("A bot is handling this conversation"), text: `🤖 ${row.bot}`}) : null);

function queueLine(row) {
  if (!inQueue(row)) return null;
  const team = row.team_id ? (S.teams.get(row.team_id) || {}).name : "";
  return el("div", {class: "row-queue", text: [
    _("in queue"), team ? interpolate(_("team %s"), [team]) : "", interpolate(_("waiting %s"), [ago(row.queued_at)]),
  ].filter(Boolean).join(" · ")});
}

function renderList() {
  const list = $("#conversation-list");
  list.replaceChildren(...S.order.map((id) => {
    const row = S.rows.get(id);
    const last = row.last_message || {};
    const preview = last.kind === "note" ? `${_("Note")}: ${last.text}` : last.text || (last.kind ? `[${last.kind}]` : "");
    return el("li", {
      class: `row ${S.current && S.current.id === id ? "current" : ""} ${row.unread_count ? "unread" : ""}`,
      "data-id": id, tabindex: "0", onclick: () => openConversation(id),
    },
      el("div", {class: "row-top"},
        el("span", {class: `channel ${row.channel_kind}`, text: channelLabel(row.channel_kind)}),
        el("strong", {class: "name", text: row.contact_name}),
        botBadge(row),
        row.unread_count ? el("span", {class: "badge", text: String(row.unread_count)}) : null),
      el("div", {class: "row-bottom"},
        el("span", {class: "preview", text: preview}),
        row.waiting_since && row.status === "open"
          ? el("span", {class: `waiting ${waitingClass(row)}`, title: _("Waiting for a reply"), text: ago(row.waiting_since)})
          : el("span", {class: "muted", text: ago(row.last_message_at)})),
      queueLine(row));
  }));
  $("#more").hidden = !S.next;
  updateTitle();
}

// --- a conversation ------------------------------------------------------------------------
async function openConversation(id) {
  const row = S.rows.get(id) || await api(`conversations/${id}/`);
  S.current = row;
  S.replyTo = null;
  S.timeline = new Map();
  history.replaceState(null, "", `/inbox/?c=${id}`);
  $("#empty-thread").hidden = true;
  for (const part of ["#thread-head", "#timeline", "#composer"]) $(part).hidden = false;
  renderHead();
  renderList();
  const [timeline, contact, conversations] = await Promise.all([
    api(`contacts/${row.contact_id}/timeline/?limit=100`),
    api(`contacts/${row.contact_id}/`),
    api(`contacts/${row.contact_id}/conversations/`),
  ]);
  if (!S.current || S.current.id !== id) return;
  for (const message of timeline.results) S.timeline.set(message.id, message);
  S.contact = contact;
  S.contactConversations = new Set(conversations.map((c) => c.id));
  renderTimeline();
  renderContact(conversations);
  renderComposer();
  if (row.unread_count) {
    const updated = await api(`conversations/${id}/read/`, {method: "POST", json: {}});
    upsertRow(updated);
  }
}

function renderHead() {
  const row = S.current;
  if (!row) return;
  $("#thread-title").textContent = row.contact_name;
  const assignee = row.assignee_id ? memberName(row.assignee_id) : _("unassigned");
  const team = row.team_id ? (S.teams.get(row.team_id) || {}).name : "";
  $("#thread-meta").textContent = [channelLabel(row.channel_kind), _(row.status), assignee, team, row.authorized ? _("verified customer") : ""].filter(Boolean).join(" · ");
  const closed = row.status === "closed";
  $("[data-action=close]").hidden = closed;
  $("[data-action=reopen]").hidden = !closed;
  $("[data-action=assign-me]").hidden = row.assignee_id === S.me.membership_id || (row.assignee_id && !S.me.is_supervisor);
  $("[data-action=take-over]").hidden = true;
  if (row.assignee_id && row.assignee_id !== S.me.membership_id && S.me.is_supervisor) {
    $("[data-action=assign-me]").hidden = true;
    $("[data-action=take-over]").hidden = false;
  }
  $("[data-action=priority]").value = row.priority;
  renderBot(row);
  renderComposer();
}

// --- bots: the header says which one handles the conversation; agents start and stop them ------
function renderBot(row) {
  $("#thread-bot").hidden = !row.bot;
  $("#thread-bot").textContent = row.bot ? `🤖 ${row.bot}` : "";
  $("[data-action=stop-bot]").hidden = !row.bot;
  const menu = $("[data-action=run-bot]");
  menu.hidden = !S.workflows.length || row.status === "closed";
  menu.value = "";
}

async function runBot(workflowId) {
  const id = S.current.id;
  try {
    await api(`workflows/${workflowId}/start/`, {method: "POST", json: {conversation: id, replace: true}});
    upsertRow(await api(`conversations/${id}/`));
  } catch (error) {
    showError("#composer-error", error);
  } finally {
    $("[data-action=run-bot]").value = "";
  }
}

async function stopBot() {
  const id = S.current.id;
  try {
    const runs = await api(`workflow-runs/?conversation=${id}&active=true`);
    for (const run of runs.results) await api(`workflow-runs/${run.id}/cancel/`, {method: "POST", json: {}});
    upsertRow(await api(`conversations/${id}/`));
  } catch (error) {
    showError("#composer-error", error);
  }
}

const TICKS = {queued: "…", sending: "…", sent: "✓", delivered: "✓✓", read: "✓✓", failed: "⚠"};

// An email's HTML, already sanitised by the server (nh3), is shown only inside a sandboxed frame
// with no scripts, forms or same-origin access: a second wall if the sanitiser ever misses.
function formattedEmail(html) {
  const box = el("details", {class: "formatted-email"}, el("summary", {text: _("Show the formatted email")}));
  box.addEventListener("toggle", () => {
    if (!box.open || $("iframe", box)) return;
    const frame = el("iframe", {sandbox: "", referrerpolicy: "no-referrer", title: _("Formatted email")});
    frame.srcdoc = html;
    box.append(frame);
  });
  return box;
}

function renderMessage(message) {
  const payload = message.payload || {};
  const isEvent = message.kind === "event";
  const classes = ["message", message.direction, message.kind, message.sender_kind].join(" ");
  const attachments = (message.attachments || []).map((file) => {
    if (!file.url) return el("div", {class: "attachment muted", text: `${file.filename} (${file.state})`});
    if (/^image\//.test(file.content_type) && file.content_type !== "image/svg+xml") {
      return el("a", {href: file.url, target: "_blank"}, el("img", {src: file.url, alt: file.filename, class: "preview-image"}));
    }
    return el("a", {class: "attachment", href: file.url, download: file.filename, text: `📄 ${file.filename}`});
  });
  const reply = message.reply_to_id && S.timeline.get(message.reply_to_id);
  const author = message.sender_kind === "agent" ? memberNameByUser(message.author_id) : message.sender_kind === "bot" ? _("Bot") : "";
  return el("li", {class: classes, "data-id": message.id},
    isEvent ? el("span", {class: "event-text", text: message.text}) : [
      el("div", {class: "meta"},
        el("span", {class: `channel ${message.channel_kind}`, text: channelLabel(message.channel_kind)}),
        message.kind === "note" ? el("span", {class: "note-label", text: _("Internal note")}) : null,
        author ? el("span", {text: author}) : null,
        el("time", {datetime: message.created_at, text: new Date(message.created_at).toLocaleString()})),
      payload.broadcast_reply ? el("div", {class: "broadcast-reply muted", text: `${_("Reply to broadcast")}: ${payload.broadcast_name || "#" + payload.broadcast_reply}`}) : null,
      reply ? el("blockquote", {text: reply.text.slice(0, 120)}) : null,
      payload.subject ? el("div", {class: "subject", text: payload.subject}) : null,
      message.text ? el("div", {class: "text", text: message.text}) : null,
      payload.edited_at ? el("span", {class: "edited muted", title: `${_("Before")}: ${payload.original_text || ""}`, text: _("edited")}) : null,
      payload.html ? formattedEmail(payload.html) : null,
      attachments,
      el("div", {class: "foot"},
        message.direction === "out" && message.kind !== "note"
          ? el("span", {class: `tick ${message.state}`, title: message.state === "failed" ? `${message.error_code}: ${message.error_reason}` : _(message.state), text: TICKS[message.state] || ""})
          : null,
        message.kind !== "note" ? el("button", {type: "button", class: "link reply-button", text: _("Reply"), onclick: () => setReplyTo(message)}) : null),
    ]);
}

function memberNameByUser(userId) {
  for (const member of S.members.values()) if (member.user_id === userId) return member.name;
  return "";
}

function renderTimeline() {
  const ordered = [...S.timeline.values()].sort((a, b) => a.id - b.id);
  const list = $("#timeline");
  list.replaceChildren(...ordered.map(renderMessage));
  list.scrollTop = list.scrollHeight;
}

function addToTimeline(message) {
  const existing = S.timeline.get(message.id);
  S.timeline.set(message.id, {...(existing || {}), ...message});
  const node = $(`#timeline [data-id="${message.id}"]`);
  const fresh = renderMessage(S.timeline.get(message.id));
  if (node) node.replaceWith(fresh);
  else { $("#timeline").append(fresh); $("#timeline").scrollTop = $("#timeline").scrollHeight; }
}

function setReplyTo(message) {
  S.replyTo = message;
  const box = $("#reply-to");
  box.hidden = false;
  $("span", box).textContent = `${_("Replying to")}: ${message.text.slice(0, 80)}`;
  $("#reply").focus();
}

// --- the reply box --------------------------------------------------------------------------
function windowClosed() {
  const row = S.current;
  const channel = S.channels.get(row.channel_id) || {};
  if (!channel.reply_window_hours) return false;
  const extra = (channel.human_reply_window_hours || channel.reply_window_hours) - channel.reply_window_hours;
  return !row.window_expires_at || Date.parse(row.window_expires_at) + extra * 3600e3 <= Date.now();
}

function renderComposer() {
  if (!S.current) return;
  const mode = $("input[name=mode]:checked").value;
  const closed = mode === "reply" && windowClosed();
  $("#window-closed").hidden = !closed;
  $(".compose-row").classList.toggle("disabled", closed);
  $("#composer").classList.toggle("note-mode", mode === "note");
  if (closed) {
    const templates = boot.templates.filter((t) => t.channel_id === S.current.channel_id);
    const choice = $("#template-choice");
    const selected = choice.value;
    choice.replaceChildren(...templates.map((t) => el("option", {value: t.id, text: `${t.name} (${t.language})`})));
    if (selected) choice.value = selected;
    renderTemplateParams();
  }
}

function renderTemplateParams() {
  const template = boot.templates.find((t) => t.id === Number($("#template-choice").value));
  const params = $("#template-params");
  if (!template) { params.replaceChildren(el("em", {text: _("No approved templates for this channel.")})); return; }
  params.replaceChildren(el("p", {class: "muted", text: template.body}),
    ...Array.from({length: template.variable_count}, (unused, i) =>
      el("input", {name: `param-${i + 1}`, placeholder: (template.variables || [])[i] || `{{${i + 1}}}`,
        value: i === 0 && S.contact ? firstName() : ""})));
}

function firstName() { return ((S.contact && S.contact.name) || "").split(" ")[0]; }

function fillVariables(text) {
  const values = {
    "contact.first_name": firstName(), "contact.name": (S.contact && S.contact.name) || "",
    "agent.name": S.me.name, "agent.first_name": S.me.name.split(" ")[0],
  };
  return text.replace(/\{\{\s*([\w.]+)\s*\}\}/g, (match, name) => (name in values ? values[name] : match));
}

async function send(event) {
  if (event) event.preventDefault();
  const box = $("#reply");
  const file = $("#file").files[0];
  const text = box.value.trim();
  const mode = $("input[name=mode]:checked").value;
  if (!text && !file) return;
  $("#composer-error").hidden = true;
  const clientId = `inbox-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;
  try {
    let message;
    if (file) {
      const form = new FormData();
      form.append("file", file);
      form.append("text", text);
      form.append("client_id", clientId);
      message = await api(`conversations/${S.current.id}/messages/`, {method: "POST", form});
    } else {
      message = await api(`conversations/${S.current.id}/messages/`, {method: "POST", json: {
        text, kind: mode === "note" ? "note" : "text", client_id: clientId, reply_to: S.replyTo ? S.replyTo.id : null,
      }});
    }
    box.value = "";
    $("#file").value = "";
    $("#file-chosen").hidden = true;
    S.replyTo = null;
    $("#reply-to").hidden = true;
    addToTimeline(message);
    upsertRow(await api(`conversations/${S.current.id}/`));
  } catch (error) {
    showError("#composer-error", error);
  }
}

async function sendTemplate() {
  const template = Number($("#template-choice").value);
  const parameters = $$("#template-params input").map((input) => input.value);
  try {
    const message = await api(`conversations/${S.current.id}/messages/`, {method: "POST", json: {
      kind: "template", payload: {template_id: template, parameters},
      client_id: `tpl-${Date.now()}`,
    }});
    addToTimeline(message);
    upsertRow(await api(`conversations/${S.current.id}/`));
  } catch (error) {
    showError("#composer-error", error);
  }
}

// `/` quick replies and `@` mentions -----------------------------------------------------------
function suggest() {
  const box = $("#reply");
  const before = box.value.slice(0, box.selectionStart);
  const bot = before.match(/(?:^|\s)\/bot\s+([\w-]*)$/);
  const slash = before.match(/(?:^|\s)\/([\w-]*)$/);
  const at = before.match(/(?:^|\s)@([\w.+-]*)$/);
  const list = $("#suggestions");
  let items = [];
  if (bot && S.workflows.length) {
    const term = bot[1].toLowerCase();
    items = S.workflows
      .filter((w) => w.shortcut.toLowerCase().startsWith(term) || w.name.toLowerCase().includes(term))
      .map((w) => ({label: `/bot ${w.shortcut} — 🤖 ${w.name}`, run: w, length: bot[0].trimStart().length}));
  } else if (slash) {
    const term = slash[1].toLowerCase();
    items = boot.quick_replies
      .filter((q) => q.shortcut.toLowerCase().includes(term) || q.text.toLowerCase().includes(term))
      .slice(0, 8)
      .map((q) => ({label: `/${q.shortcut} — ${q.text.slice(0, 60)}`, insert: fillVariables(q.text), length: slash[1].length + 1}));
  } else if (at && $("input[name=mode]:checked").value === "note") {
    const term = at[1].toLowerCase();
    items = [...S.members.values()]
      .filter((m) => m.username.toLowerCase().startsWith(term) || m.name.toLowerCase().includes(term))
      .slice(0, 8)
      .map((m) => ({label: `@${m.username} — ${m.name}`, insert: `@${m.username} `, length: at[1].length + 1}));
  }
  list.replaceChildren(...items.map((item, index) => el("li", {
    class: index === 0 ? "active" : "", onmousedown: (e) => { e.preventDefault(); applySuggestion(item); },
    text: item.label,
  })));
  list.hidden = !items.length;
  list.items = items;
}

function applySuggestion(item) {
  const box = $("#reply");
  const start = box.selectionStart - item.length;
  if (item.run) {  // `/bot survey` starts the workflow instead of writing anything
    box.value = box.value.slice(0, start) + box.value.slice(box.selectionStart);
    $("#suggestions").hidden = true;
    runBot(item.run.id);
    return;
  }
  box.value = box.value.slice(0, start) + item.insert + box.value.slice(box.selectionStart);
  box.selectionStart = box.selectionEnd = start + item.insert.length;
  $("#suggestions").hidden = true;
  box.focus();
}

function moveSuggestion(step) {
  const nodes = $$("#suggestions li");
  const index = nodes.findIndex((node) => node.classList.contains("active"));
  nodes.forEach((node) => node.classList.remove("active"));
  nodes[(index + step + nodes.length) % nodes.length].classList.add("active");
}

let typingSentAt = 0;
function onReplyKey(event) {
  const list = $("#suggestions");
  if (!list.hidden) {
    if (event.key === "ArrowDown" || event.key === "ArrowUp") { event.preventDefault(); moveSuggestion(event.key === "ArrowDown" ? 1 : -1); return; }
    if (event.key === "Enter" || event.key === "Tab") {
      event.preventDefault();
      const index = $$("#suggestions li").findIndex((node) => node.classList.contains("active"));
      applySuggestion(list.items[Math.max(index, 0)]);
      return;
    }
    if (event.key === "Escape") { list.hidden = true; return; }
  }
  if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); send(); return; }
  if (Date.now() - typingSentAt > 3000 && S.current) {
    typingSentAt = Date.now();
    live.send({type: "typing", conversation_id: S.current.id});
  }
}

// --- acts on the conversation ---------------------------------------------------------------
async function act(path, json) {
  try {
    const row = await api(`conversations/${S.current.id}/${path}`, {method: path ? "POST" : "PATCH", json});
    upsertRow(row);
    S.current = {...S.current, ...row};
    renderHead();
  } catch (error) {
    showError("#composer-error", error);
  }
}

function dialog(title, fields, onSubmit) {
  const form = $("#dialog-form");
  form.replaceChildren(el("h2", {text: title}), ...fields,
    el("div", {class: "error", id: "dialog-error", hidden: true}),
    el("menu", {},
      el("button", {value: "cancel", type: "button", text: _("Cancel"), onclick: () => $("#dialog").close()}),
      el("button", {value: "ok", class: "primary", text: _("OK")})));
  form.onsubmit = async (event) => {
    event.preventDefault();
    const button = $("button.primary", form);
    button.disabled = true;
    try { await onSubmit(new FormData(form)); $("#dialog").close(); } catch (error) { showError("#dialog-error", error); }
    button.disabled = false;
  };
  $("#dialog").showModal();
}

function select(name, options, value = "") {
  return el("label", {}, el("span", {text: name}), el("select", {name: name.toLowerCase()},
    options.map(([optionValue, label]) => el("option", {value: optionValue, text: label, selected: String(optionValue) === String(value)}))));
}

const ACTIONS = {
  "assign-me": () => act("assign/", {assignee: S.me.membership_id}),
  "take-over": () => act("assign/", {assignee: S.me.membership_id, note: interpolate(_("%s took over this conversation."), [S.me.name])}),
  transfer: () => dialog(_("Transfer"), [
    el("label", {}, el("span", {text: _("To a colleague")}), el("select", {name: "assignee"},
      el("option", {value: "", text: "—"}),
      [...S.members.values()].map((m) => el("option", {value: m.id, text: `${m.name} (${_(m.status)})`})))),
    el("label", {}, el("span", {text: _("Or a team")}), el("select", {name: "team"},
      el("option", {value: "", text: "—"}),
      [...S.teams.values()].map((t) => el("option", {value: t.id, text: t.name})))),
    el("label", {}, el("span", {text: _("Note for them")}), el("textarea", {name: "note", rows: 3})),
  ], async (data) => {
    const body = {note: data.get("note")};
    if (data.get("assignee")) body.assignee = Number(data.get("assignee"));
    if (data.get("team")) body.team = Number(data.get("team"));
    if (!body.assignee && !body.team) throw new Error(_("Choose a colleague or a team."));
    if (body.team && !body.assignee) body.assignee = null;
    const row = await api(`conversations/${S.current.id}/assign/`, {method: "POST", json: body});
    upsertRow(row);
    await reloadTimeline();
  }),
  snooze: () => dialog(_("Snooze until"), [
    el("input", {type: "datetime-local", name: "until", required: true,
      value: new Date(Date.now() + 3600e3 - new Date().getTimezoneOffset() * 60e3).toISOString().slice(0, 16)}),
  ], async (data) => {
    const row = await api(`conversations/${S.current.id}/snooze/`, {method: "POST", json: {until: new Date(data.get("until")).toISOString()}});
    upsertRow(row);
  }),
  close: () => dialog(_("Close the conversation"), [
    boot.workspace.closing_categories.length
      ? select(_("Category"), boot.workspace.closing_categories.map((c) => [c, c]), S.current.category)
      : el("label", {}, el("span", {text: _("Category")}), el("input", {name: "category", value: S.current.category || ""})),
    el("label", {}, el("span", {text: _("Summary")}), el("textarea", {name: "summary", rows: 3})),
  ], async (data) => {
    const row = await api(`conversations/${S.current.id}/close/`, {method: "POST", json: {category: data.get("category") || "", summary: data.get("summary") || ""}});
    upsertRow(row);
    await reloadTimeline();
  }),
  reopen: () => act("reopen/", {}),
  "toggle-panel": () => { $("#contact-pane").hidden = !$("#contact-pane").hidden; },
  "stop-bot": () => stopBot(),
};

async function reloadTimeline() {
  const timeline = await api(`contacts/${S.current.contact_id}/timeline/?limit=100`);
  for (const message of timeline.results) S.timeline.set(message.id, message);
  renderTimeline();
}

// --- the customer panel -----------------------------------------------------------------------
async function renderContact(conversations) {
  const contact = S.contact;
  const pane = $("#contact");
  $("#contact-pane").hidden = window.innerWidth < 1100 && $("#contact-pane").hidden;
  const fields = Object.entries(contact.custom_fields || {});
  pane.replaceChildren(
    el("h2", {text: contact.name || _("Unknown customer")}),
    el("dl", {},
      contact.phone ? [el("dt", {text: _("Phone")}), el("dd", {text: contact.phone})] : null,
      contact.email ? [el("dt", {text: _("Email")}), el("dd", {text: contact.email})] : null,
      contact.external_id ? [el("dt", {text: _("Customer id")}), el("dd", {text: contact.external_id})] : null,
      [el("dt", {text: _("Stage")}), el("dd", {text: _(contact.lifecycle_stage)})],
      contact.language ? [el("dt", {text: _("Language")}), el("dd", {text: contact.language})] : null,
      contact.last_purchase_at ? [el("dt", {text: _("Last purchase")}), el("dd", {text: new Date(contact.last_purchase_at).toLocaleDateString()})] : null,
      fields.map(([key, value]) => [el("dt", {text: key}), el("dd", {text: String(value)})])),
    el("div", {class: "tags"}, contact.tags.map((tag) => el("span", {class: "tag", style: `background:${tag.color}`, text: tag.name}))),
    el("h3", {text: _("Conversation tags")}),
    el("div", {class: "tag-picker"}, [...S.tags.values()].map((tag) => el("label", {},
      el("input", {type: "checkbox", value: tag.id, checked: S.current.tag_ids.includes(tag.id),
        onchange: () => act("", {tags: $$(".tag-picker input:checked").map((input) => Number(input.value))})}),
      ` ${tag.name}`))),
    el("h3", {}, _("Orders"), " ", el("button", {type: "button", class: "link", text: _("Look up"), onclick: () => loadOrders(contact.id)})),
    el("div", {id: "orders"}),
    el("h3", {text: _("Conversations")}),
    el("ul", {class: "previous"}, conversations.map((c) => el("li", {},
      el("a", {href: `/inbox/?c=${c.id}`, onclick: (e) => { e.preventDefault(); openConversation(c.id); },
        text: `${channelLabel(c.channel_kind)} · ${_(c.status)} · ${c.last_message_at ? new Date(c.last_message_at).toLocaleDateString() : ""}`})))),
    el("div", {id: "duplicates"}));
  loadOrders(contact.id);
  const duplicates = await api(`contacts/${contact.id}/duplicates/`);
  if (!duplicates.length || !S.contact || S.contact.id !== contact.id) return;
  $("#duplicates").replaceChildren(el("h3", {text: _("Possible duplicates")}), ...duplicates.map((other) => el("div", {class: "duplicate"},
    el("span", {text: `${other.name || "?"} ${other.phone || other.email || ""}`}),
    el("button", {type: "button", text: _("Merge into this contact"), onclick: async () => {
      S.contact = await api(`contacts/${contact.id}/merge/`, {method: "POST", json: {duplicate: other.id}});
      await openConversation(S.current.id);
    }}))));
}

async function loadOrders(contactId) {
  const box = $("#orders");
  box.textContent = _("Loading…");
  try {
    const found = await api(`contacts/${contactId}/orders/`);
    if (!S.contact || S.contact.id !== contactId) return;
    box.replaceChildren(...[
      found.notice ? el("p", {class: "muted", text: found.notice}) : null,
      found.orders.length ? el("ul", {class: "orders"}, found.orders.map((order) => el("li", {},
        el("strong", {text: `#${order.external_id}`}), ` ${_(order.status || "")} `,
        order.total ? el("span", {class: "muted", text: `${order.total} ${order.currency || ""}`}) : null,
        webUrl(order.tracking_url) ? [" ", el("a", {href: order.tracking_url, target: "_blank", rel: "noopener", text: _("track")})] : null,
        order.tracking_number && !webUrl(order.tracking_url) ? el("span", {class: "muted", text: ` ${order.courier || ""} ${order.tracking_number}`}) : null,
      ))) : el("p", {class: "muted", text: _("No orders.")})].filter(Boolean));
  } catch (error) {
    box.textContent = error.message;
  }
}

// --- live events ---------------------------------------------------------------------------------
const HANDLERS = {
  "conversation.updated": ({conversation}) => upsertRow(conversation),
  "message.created": ({conversation_id, message}) => {
    const row = S.rows.get(conversation_id);
    if (row && message.kind !== "event") {
      upsertRow({...row, last_message: {text: message.text, kind: message.kind, direction: message.direction, sender_kind: message.sender_kind},
        last_message_at: message.created_at});
    } else if (!row) {
      api(`conversations/${conversation_id}/`).then(upsertRow).catch(() => {});
    }
    if (S.current && S.contactConversations.has(conversation_id)) {
      addToTimeline(message);
      if (message.direction === "in" && S.current.id === conversation_id) {
        api(`conversations/${conversation_id}/read/`, {method: "POST", json: {}}).then(upsertRow).catch(() => {});
      }
    } else if (S.current && S.current.id === conversation_id) {
      addToTimeline(message);
    }
  },
  "message.status": ({message_id, state, error_code, error_reason}) => {
    if (S.timeline.has(message_id)) addToTimeline({id: message_id, state, error_code, error_reason});
  },
  "attachment.failed": ({message_id, reason}) => {
    const message = S.timeline.get(message_id);
    if (message) addToTimeline({...message, text: `${message.text}\n⚠ ${reason}`});
  },
  "conversation.typing": ({conversation_id, name}) => {
    if (!S.current || S.current.id !== conversation_id) return;
    const hint = $("#typing");
    hint.textContent = interpolate(_("%s is typing…"), [name]);
    hint.hidden = false;
    clearTimeout(hint.timer);
    hint.timer = setTimeout(() => { hint.hidden = true; }, 5000);
  },
  "agent.status": ({membership_id, status, capacity}) => {
    const member = S.members.get(membership_id);
    if (member) member.status = status;
    if (membership_id === S.me.membership_id) $("#presence").value = status;
    if ($("#dialog").open && $("#board")) renderBoard();
  },
  "notification.created": ({notification}) => {
    S.notifications.unshift(notification);
    renderNotifications();
    alertPerson(notification);
  },
};

function onEvent(event) {
  const handler = HANDLERS[event.type];
  if (handler) handler(event.payload);
}

// --- notifications, presence, the agents board -----------------------------------------------
function renderNotifications() {
  const count = S.notifications.filter((n) => !n.read_at).length;
  $("#notification-count").textContent = String(count);
  $("#notification-count").hidden = !count;
  updateTitle();
}

function updateTitle() {
  const unread = [...S.rows.values()].filter((row) => row.assignee_id === S.me.membership_id).reduce((sum, row) => sum + row.unread_count, 0);
  const count = unread + S.notifications.filter((n) => !n.read_at).length;
  document.title = `${count ? `(${count}) ` : ""}${_("Inbox")} · ${boot.workspace.name}`;
}

function beep() {
  try {
    const audio = new (window.AudioContext || window.webkitAudioContext)();
    const tone = audio.createOscillator();
    tone.frequency.value = 880;
    tone.connect(audio.destination);
    tone.start();
    tone.stop(audio.currentTime + 0.15);
  } catch (error) { /* no sound here */ }
}

function alertPerson(notification) {
  beep();
  const text = notification.kind === "mention" ? _("You were mentioned in a note") : _("A conversation was assigned to you");
  if ("Notification" in window && Notification.permission === "granted") {
    const shown = new Notification("Parley", {body: text, tag: `parley-${notification.id}`});
    shown.onclick = () => { window.focus(); openConversation(notification.conversation_id); };
  }
}

function askNotificationPermission() {
  if ("Notification" in window && Notification.permission === "default" && !localStorage.getItem("parley:asked")) {
    localStorage.setItem("parley:asked", "1");
    Notification.requestPermission();
  }
}

async function setPresence(status) {
  await api(`agents/${S.me.membership_id}/status/`, {method: "POST", json: {status}});
  S.me.status = status;
  $("#presence").value = status;
}

function showNotifications() {
  dialog(_("Notifications"), [el("ul", {class: "notifications"}, S.notifications.length ? S.notifications.map((n) => el("li", {},
    el("a", {href: "#", onclick: (e) => { e.preventDefault(); $("#dialog").close(); openConversation(n.conversation_id); },
      text: `${n.kind === "mention" ? _("Mentioned by") : _("Assigned by")} ${memberNameByUser(n.actor_id) || "Parley"} · ${new Date(n.created_at).toLocaleString()}`}))) : el("li", {text: _("Nothing new.")}))],
  async () => {
    await api("notifications/read/", {method: "POST", json: {}});
    S.notifications.forEach((n) => { n.read_at = new Date().toISOString(); });
    renderNotifications();
  });
}

async function renderBoard() {
  const agents = await api("agents/?limit=200");
  $("#board").replaceChildren(el("tr", {}, [_("Agent"), _("Status"), _("Open"), _("Capacity")].map((h) => el("th", {text: h}))),
    ...agents.results.map((agent) => el("tr", {class: `agent ${agent.status}`},
      el("td", {text: agent.name}), el("td", {text: _(agent.status)}),
      el("td", {text: String(agent.open_conversations)}), el("td", {text: String(agent.capacity)}))));
}

function showBoard() {
  dialog(_("Agents"), [el("table", {id: "board", class: "board"})], async () => {});
  renderBoard();
}

// --- keyboard --------------------------------------------------------------------------------
const SHORTCUTS = [
  ["j", _("next conversation")], ["k", _("previous conversation")], ["a", _("assign to me")],
  ["c", _("close")], ["r", _("focus the reply box")], ["n", _("write a note")], ["/", _("search")], ["?", _("this help")],
];

function step(delta) {
  const index = S.current ? S.order.indexOf(S.current.id) : -1;
  const next = S.order[Math.min(Math.max(index + delta, 0), S.order.length - 1)];
  if (next) openConversation(next);
}

function onKey(event) {
  if (event.target.closest("input, textarea, select, dialog") || event.ctrlKey || event.metaKey || event.altKey) return;
  const keys = {
    j: () => step(1), k: () => step(-1),
    a: () => S.current && ACTIONS["assign-me"](), c: () => S.current && ACTIONS.close(),
    r: () => { $("input[value=reply]").checked = true; renderComposer(); $("#reply").focus(); },
    n: () => { $("input[value=note]").checked = true; renderComposer(); $("#reply").focus(); },
    "/": () => $("#filters [name=q]").focus(),
    "?": () => dialog(_("Keyboard shortcuts"), [el("dl", {class: "shortcuts"}, SHORTCUTS.map(([key, what]) => [el("dt", {}, el("kbd", {text: key})), el("dd", {text: what})]))], async () => {}),
  };
  if (keys[event.key]) { event.preventDefault(); keys[event.key](); }
}

// --- start -------------------------------------------------------------------------------------
const live = new Live({
  workspace: boot.workspace.slug,
  onEvent,
  onState: (state) => { $("#connection").className = `connection ${state}`; $("#connection").title = _(state); },
  onResyncOverflow: () => { loadList(); if (S.current) openConversation(S.current.id); },
});

function fillFilterChoices() {
  const add = (name, items, label) => $(`#filters [name=${name}]`).append(...items.map((item) => el("option", {value: item.id, text: label(item)})));
  $("[data-action=run-bot]").append(...S.workflows.map((w) => el("option", {value: w.id, text: `🤖 ${w.name}${w.shortcut ? ` (/bot ${w.shortcut})` : ""}`})));
  add("channel", boot.channels, (c) => `${c.name} (${channelLabel(c.kind)})`);
  add("team", boot.teams, (t) => t.name);
  add("tag", boot.tags, (t) => t.name);
}

function setView(view) {
  S.view = view;
  localStorage.setItem("parley:view", view);
  $$(".views button").forEach((button) => button.setAttribute("aria-selected", String(button.dataset.view === view)));
  loadList();
}

function start() {
  fillFilterChoices();
  $("[data-view=all]").hidden = !S.me.is_supervisor;
  $("#board-button").hidden = !S.me.is_supervisor;
  if (S.view === "all" && !S.me.is_supervisor) S.view = "mine";
  $("#presence").value = S.me.status;
  if (S.me.status === "offline") setPresence("online");  // opening the inbox is starting work
  $$(".views button").forEach((button) => button.addEventListener("click", () => setView(button.dataset.view)));
  let searchTimer;
  $("#filters").addEventListener("input", () => { clearTimeout(searchTimer); searchTimer = setTimeout(loadList, 250); });
  $("#filters").addEventListener("submit", (event) => { event.preventDefault(); loadList(); });
  $("#more").addEventListener("click", loadMore);
  $("#composer").addEventListener("submit", send);
  $("#reply").addEventListener("keydown", onReplyKey);
  $("#reply").addEventListener("input", suggest);
  $("#file").addEventListener("change", () => { const f = $("#file").files[0]; $("#file-chosen").textContent = f ? `📎 ${f.name}` : ""; $("#file-chosen").hidden = !f; });
  $("#cancel-reply").addEventListener("click", () => { S.replyTo = null; $("#reply-to").hidden = true; });
  $$("input[name=mode]").forEach((radio) => radio.addEventListener("change", renderComposer));
  $("#template-choice").addEventListener("change", renderTemplateParams);
  $("#send-template").addEventListener("click", sendTemplate);
  $$("[data-action]").forEach((control) => {
    const name = control.dataset.action;
    if (name === "priority") control.addEventListener("change", () => act("", {priority: control.value}));
    else if (name === "run-bot") control.addEventListener("change", () => control.value && runBot(Number(control.value)));
    else control.addEventListener("click", () => ACTIONS[name]());
  });
  $("#presence").addEventListener("change", (event) => setPresence(event.target.value));
  $("#notifications-button").addEventListener("click", showNotifications);
  $("#board-button").addEventListener("click", showBoard);
  document.addEventListener("keydown", onKey);
  document.addEventListener("click", askNotificationPermission, {once: true});
  setInterval(renderList, 30000);  // waiting times move on
  renderNotifications();
  live.connect();
  setView(S.view);
  const wanted = Number(new URLSearchParams(location.search).get("c"));
  if (wanted) openConversation(wanted);
  $("#inbox").dataset.state = "ready";
  window.parleyInbox = {live, state: S};  // for the browser tests and a curious developer
}

start();
