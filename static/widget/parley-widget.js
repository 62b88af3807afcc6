/* Parley web chat widget. A shop adds it with one tag:
 *   <script src="https://parley.example.com/widget/<channel uuid>.js" async></script>
 * For a signed-in customer, set before it (customerHash = hex HMAC-SHA256 of customerId with the
 * channel's secret, computed on the shop's server):
 *   <script>window.parleySettings = {customerId: "42", customerHash: "…"}</script>
 * It talks to Parley over one websocket (protocol: apps/connectors/consumers.py), keeps the
 * visitor's token and unsent messages in localStorage so a reload continues the conversation,
 * and exposes window.Parley.open() / .close(). Served by apps/connectors/views.widget_script,
 * which replaces the config placeholder below. */
(function () {
  "use strict";
  var CONFIG = __PARLEY_CONFIG__;
  var script = document.currentScript;
  var BASE = new URL(script ? script.src : location.href).origin;
  var KEY = "parley:" + CONFIG.channel + ":";
  var settings = window.parleySettings || {};
  var store = {
    get: function (name, fallback) {
      try { var v = localStorage.getItem(KEY + name); return v === null ? fallback : JSON.parse(v); }
      catch (e) { return fallback; }
    },
    set: function (name, value) { try { localStorage.setItem(KEY + name, JSON.stringify(value)); } catch (e) {} }
  };
  var socket = null, joined = false, retry = 0, isOpen = false;
  var pending = store.get("pending", {});  // id -> {id, text, upload?}: sent until acknowledged
  var shown = {};                          // message id -> element

  // --- DOM ------------------------------------------------------------------------------------
  var host = document.createElement("div");
  host.id = "parley-widget";
  var root = host.attachShadow ? host.attachShadow({mode: "open"}) : host;
  root.innerHTML =
    "<style>" +
    ":host{all:initial}*{box-sizing:border-box;font:14px/1.4 system-ui,sans-serif}[hidden]{display:none!important}" +
    ".launch{position:fixed;right:20px;bottom:20px;width:56px;height:56px;border-radius:50%;border:0;" +
    "color:#fff;cursor:pointer;box-shadow:0 4px 14px rgba(0,0,0,.25);z-index:2147483000;display:flex;align-items:center;justify-content:center}" +
    ".panel{position:fixed;right:20px;bottom:88px;width:340px;max-width:calc(100vw - 40px);height:480px;" +
    "max-height:calc(100vh - 120px);background:#fff;border-radius:12px;box-shadow:0 8px 30px rgba(0,0,0,.25);" +
    "display:none;flex-direction:column;overflow:hidden;z-index:2147483000}" +
    ".panel.open{display:flex}.head{color:#fff;padding:12px 14px;font-weight:600}" +
    ".status{font-weight:400;font-size:12px;opacity:.85}" +
    ".log{flex:1;overflow-y:auto;padding:10px;background:#f6f7f9}" +
    ".msg{max-width:80%;margin:4px 0;padding:7px 10px;border-radius:10px;white-space:pre-wrap;word-wrap:break-word}" +
    ".in{background:#fff;border:1px solid #e2e4e8}.out{margin-left:auto;color:#fff}" +
    ".meta{display:block;font-size:11px;opacity:.7;margin-top:2px}.msg a{color:inherit}" +
    ".msg img{max-width:100%;border-radius:6px;display:block}" +
    ".error{color:#b00020;font-size:12px;padding:4px 10px}" +
    "form.send{display:flex;border-top:1px solid #e2e4e8}form.send textarea{flex:1;border:0;padding:10px;resize:none;height:48px}" +
    "form.send button,label.attach{border:0;background:none;padding:0 12px;cursor:pointer;color:#555;display:flex;align-items:center}" +
    "form.prechat{padding:14px;display:flex;flex-direction:column;gap:8px}" +
    "form.prechat input{padding:8px;border:1px solid #ccd;border-radius:6px}" +
    "form.prechat button{padding:9px;border:0;border-radius:6px;color:#fff;cursor:pointer}" +
    ".field-error{color:#b00020;font-size:12px}" +
    "</style>" +
    '<button class="launch" part="launcher" aria-label="Chat"><svg width="26" height="26" viewBox="0 0 24 24" fill="currentColor" aria-hidden="true"><path d="M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H9l-5 4v-4H4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2z"/></svg></button>' +
    '<div class="panel" role="dialog" aria-label="Chat">' +
    '<div class="head"><div class="title"></div><div class="status"></div></div>' +
    '<div class="log" aria-live="polite"></div><div class="error" hidden></div>' +
    '<form class="prechat" hidden></form>' +
    '<form class="send"><label class="attach" title="Attach a file"><svg width="18" height="18" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" aria-hidden="true"><path d="M21 11l-9 9a6 6 0 0 1-8.5-8.5l9-9a4 4 0 0 1 5.7 5.7l-9 9a2 2 0 0 1-2.9-2.9l8.3-8.3"/></svg><input type="file" hidden></label>' +
    '<textarea placeholder="Type a message…" aria-label="Message"></textarea>' +
    '<button type="submit" aria-label="Send"><svg width="18" height="18" viewBox="0 0 24 24" fill="currentColor" aria-hidden="true"><path d="M2 21l21-9L2 3v7l15 2-15 2z"/></svg></button></form></div>';
  var $ = function (sel) { return root.querySelector(sel); };
  var launch = $(".launch"), panel = $(".panel"), log = $(".log"), errorBox = $(".error");
  var sendForm = $("form.send"), prechatForm = $("form.prechat"), input = $("textarea"), fileInput = $("input[type=file]");
  launch.style.background = $(".head").style.background = CONFIG.color;
  $(".title").textContent = CONFIG.title;

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function setStatus(text) { $(".status").textContent = text; }
  function showError(text) { errorBox.textContent = text; errorBox.hidden = !text; }

  function render(message) {
    var node = shown[message.id];
    if (!node) {
      node = el("div", "msg " + (message.direction === "out" ? "in" : "out"));
      if (message.direction !== "out") node.style.background = CONFIG.color;
      shown[message.id] = node;
      log.appendChild(node);
    }
    node.textContent = message.text || "";
    (message.attachments || []).forEach(function (file) {
      var url = BASE + file.url;
      if (/^image\/(png|jpeg|gif|webp)$/.test(file.content_type)) {
        var img = el("img"); img.src = url; img.alt = file.filename; node.appendChild(img);
      } else {
        var link = el("a", "", file.filename); link.href = url; link.target = "_blank"; link.rel = "noopener";
        node.appendChild(el("br")); node.appendChild(link);
      }
    });
    var meta = el("span", "meta", message.pending ? "sending…" : message.failed ? "not sent: " + message.failed : "");
    if (meta.textContent) node.appendChild(meta);
    log.scrollTop = log.scrollHeight;
  }

  // --- socket ---------------------------------------------------------------------------------
  function send(frame) {
    if (socket && socket.readyState === 1) { socket.send(JSON.stringify(frame)); return true; }
    return false;
  }
  function connect() {
    setStatus("connecting…");
    socket = new WebSocket(BASE.replace(/^http/, "ws") + "/ws/widget/" + CONFIG.channel + "/");
    socket.onopen = function () {
      retry = 0;
      send({type: "join", token: store.get("token", ""), customer_id: settings.customerId || "",
            customer_hash: settings.customerHash || ""});
    };
    socket.onmessage = function (event) {
      var frame = JSON.parse(event.data);
      (handlers[frame.type] || function () {})(frame);
    };
    socket.onclose = function (event) {
      joined = false;
      if (event.code === 4403 || event.code === 4404) { setStatus("chat unavailable on this site"); return; }
      setStatus("reconnecting…");
      retry = Math.min(retry + 1, 6);
      setTimeout(connect, 500 * Math.pow(2, retry));
    };
  }
  var handlers = {
    joined: function (frame) {
      joined = true;
      store.set("token", frame.token);
      setStatus("online");
      log.textContent = ""; shown = {};
      if (CONFIG.greeting) log.appendChild(el("div", "msg in", CONFIG.greeting));
      frame.history.forEach(render);
      Object.keys(pending).forEach(function (id) { render(Object.assign({pending: true}, pending[id])); send(Object.assign({type: "message"}, pending[id])); });
      receipts(frame.history);
      var prechat = CONFIG.prechat || {};
      prechatForm.hidden = !(prechat.enabled && !store.get("prechat_done", false) && !frame.verified && !frame.history.length);
      sendForm.hidden = !prechatForm.hidden;
    },
    ack: function (frame) {
      if (!pending[frame.id]) return;
      var message = pending[frame.id];
      delete pending[frame.id]; store.set("pending", pending);
      render(message);
    },
    message: function (frame) { render(frame.message); receipts([frame.message]); },
    prechat_ok: function () { store.set("prechat_done", true); prechatForm.hidden = true; sendForm.hidden = false; showError(""); },
    error: function (frame) {
      if (frame.code === "invalid_prechat") {
        prechatForm.querySelectorAll(".field-error").forEach(function (n) { n.textContent = ""; });
        Object.keys(frame.fields || {}).forEach(function (field) {
          var slot = prechatForm.querySelector('[data-error="' + field + '"]');
          if (slot) slot.textContent = frame.fields[field].join(" ");
        });
        return;
      }
      if (frame.id && pending[frame.id]) {
        var message = pending[frame.id];
        delete pending[frame.id]; store.set("pending", pending);
        render(Object.assign({failed: frame.detail}, message));
        return;
      }
      showError(frame.detail || frame.code);
    },
    pong: function () {}
  };
  function receipts(messages) {
    var ids = messages.filter(function (m) { return m.direction === "out" && m.state !== "read"; }).map(function (m) { return m.id; });
    if (!ids.length) return;
    send({type: "receipt", state: "delivered", ids: ids});
    if (isOpen && document.visibilityState === "visible") send({type: "receipt", state: "read", ids: ids});
    else unread = unread.concat(ids);
  }
  var unread = [];
  function markRead() {
    if (unread.length && isOpen && document.visibilityState === "visible" && send({type: "receipt", state: "read", ids: unread})) unread = [];
  }

  // --- sending --------------------------------------------------------------------------------
  function newId() { return Date.now().toString(36) + "-" + Math.random().toString(36).slice(2, 10); }
  function queue(text, upload, attachment) {
    var message = {id: newId(), text: text};
    if (upload) message.upload = upload;
    pending[message.id] = message; store.set("pending", pending);
    render(Object.assign({pending: true, attachments: attachment ? [attachment] : []}, message));
    send(Object.assign({type: "message"}, message));
  }
  sendForm.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = input.value.trim();
    if (!text) return;
    input.value = "";
    queue(text);
  });
  input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); sendForm.requestSubmit(); }
  });
  fileInput.addEventListener("change", function () {
    var file = fileInput.files[0];
    fileInput.value = "";
    if (!file) return;
    var body = new FormData();
    body.append("file", file);
    showError("");
    fetch(BASE + "/widget/" + CONFIG.channel + "/uploads/", {method: "POST", body: body, headers: {"X-Parley-Visitor": store.get("token", "")}})
      .then(function (response) { return response.json().then(function (data) { return {ok: response.ok, data: data}; }); })
      .then(function (result) {
        if (!result.ok) { showError(result.data.detail || "The file could not be sent."); return; }
        queue(input.value.trim(), result.data.upload);
        input.value = "";
      })
      .catch(function () { showError("The file could not be sent. Check your connection."); });
  });

  // --- pre-chat form --------------------------------------------------------------------------
  (function buildPrechat() {
    var prechat = CONFIG.prechat || {};
    var fields = prechat.fields || ["name", "email", "phone"];
    var labels = {name: "Your name", email: "Email", phone: "Phone"};
    prechatForm.appendChild(el("div", "", prechat.intro || "Tell us who you are, and we'll get back to you here."));
    fields.forEach(function (field) {
      var inputNode = el("input");
      inputNode.name = field; inputNode.placeholder = labels[field] || field;
      inputNode.type = field === "email" ? "email" : field === "phone" ? "tel" : "text";
      if ((prechat.required || []).indexOf(field) >= 0) inputNode.required = true;
      prechatForm.appendChild(inputNode);
      var slot = el("div", "field-error"); slot.setAttribute("data-error", field);
      prechatForm.appendChild(slot);
    });
    var button = el("button", "", "Start chat"); button.type = "submit"; button.style.background = CONFIG.color;
    prechatForm.appendChild(button);
    prechatForm.addEventListener("submit", function (event) {
      event.preventDefault();
      var frame = {type: "prechat"};
      fields.forEach(function (field) { frame[field] = prechatForm.querySelector('[name="' + field + '"]').value; });
      send(frame);
    });
  })();

  // --- open / close ---------------------------------------------------------------------------
  function toggle(open) {
    isOpen = open === undefined ? !isOpen : open;
    panel.classList.toggle("open", isOpen);
    store.set("open", isOpen);
    if (isOpen) { markRead(); (prechatForm.hidden ? input : prechatForm.querySelector("input") || input).focus(); }
  }
  launch.addEventListener("click", function () { toggle(); });
  document.addEventListener("visibilitychange", markRead);
  window.Parley = {open: function () { toggle(true); }, close: function () { toggle(false); }};
  setInterval(function () { send({type: "ping"}); }, 30000);

  function start() {
    document.body.appendChild(host);
    if (store.get("open", false)) toggle(true);
    connect();
  }
  if (document.body) start(); else document.addEventListener("DOMContentLoaded", start);
})();
