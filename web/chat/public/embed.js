/*
 * opengms chat widget loader. On a shop's page:
 *
 *   <script src="https://gms.example.com/chat/embed.js" data-service="request-chat"
 *           data-title="Talk to us" data-accent="#0f766e" async></script>
 *
 * data-service: a configured request-chat service (its endpoint is the queue); data-title: the
 * widget's title and the button's label (data-label for another label); data-accent: a colour.
 *
 * It adds a chat button in the corner; the button opens the widget (/chat/ of the same server) in
 * a frame above the page. The frame is created on the first click, so the page loads nothing more
 * until then. A chat in progress survives the shop's page reloading (the frame is opened again).
 * Plain JavaScript, no dependencies, nothing global but one element.
 */
(function () {
  "use strict";
  var script = document.currentScript;
  if (!(script instanceof HTMLScriptElement) || document.getElementById("opengms-chat")) return;
  var data = script.dataset;
  var page = new URL("./", script.src);
  ["service", "title", "accent"].forEach(function (key) {
    if (data[key]) page.searchParams.set(key, data[key]);
  });
  page.searchParams.set("embedded", "1");
  var accent = /^#([0-9a-f]{3}|[0-9a-f]{6})$/i.test(data.accent || "") ? data.accent : "#2456d3";
  var OPEN = "opengms-chat-open";
  var label = data.label || data.title || "Chat with us";

  var root = document.createElement("div");
  root.id = "opengms-chat";
  root.style.cssText = "position:fixed;right:20px;bottom:20px;z-index:2147483000;display:flex;flex-direction:column;align-items:flex-end;gap:12px;font:15px/1.4 system-ui,sans-serif";

  /** @type {HTMLIFrameElement | null} */
  var frame = null;
  var button = document.createElement("button");
  button.type = "button";
  button.setAttribute("aria-expanded", "false");
  button.setAttribute("aria-label", label);
  button.style.cssText =
    "width:60px;height:60px;border:0;border-radius:50%;background:" + accent + ";color:#fff;cursor:pointer;display:grid;place-items:center;box-shadow:0 8px 24px rgba(22,32,60,.28)";
  var CHAT = '<svg width="28" height="28" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="1.8" stroke-linecap="round" stroke-linejoin="round" aria-hidden="true"><path d="M21 12a8 8 0 0 1-11.6 7.1L4 20l1-4.6A8 8 0 1 1 21 12z"/></svg>';
  var CLOSE = '<svg width="26" height="26" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" aria-hidden="true"><path d="M6 6l12 12M18 6L6 18"/></svg>';
  button.innerHTML = CHAT;

  /** @param {boolean} open */
  function show(open) {
    if (open && !frame) {
      frame = document.createElement("iframe");
      frame.src = page.href;
      frame.title = label;
      frame.style.cssText =
        "width:min(400px,calc(100vw - 40px));height:min(640px,calc(100vh - 120px));border:0;border-radius:20px;background:#fff;box-shadow:0 16px 48px rgba(22,32,60,.22)";
      root.insertBefore(frame, button);
    }
    if (frame) frame.style.display = open ? "block" : "none";
    button.innerHTML = open ? CLOSE : CHAT;
    button.setAttribute("aria-expanded", String(open));
    button.setAttribute("aria-label", open ? "Close the chat" : label);
    try {
      if (open) sessionStorage.setItem(OPEN, "1");
      else sessionStorage.removeItem(OPEN);
    } catch {
      /* storage may be off: the chat still works */
    }
    if (open && frame) frame.focus();
  }

  button.addEventListener("click", function () {
    show(button.getAttribute("aria-expanded") !== "true");
  });
  root.appendChild(button);

  function mount() {
    document.body.appendChild(root);
    try {
      if (sessionStorage.getItem(OPEN) === "1") show(true);
    } catch {
      /* as above */
    }
  }
  if (document.body) mount();
  else document.addEventListener("DOMContentLoaded", mount);
})();
