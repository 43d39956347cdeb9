// Palate rating page: keyboard shortcuts, double-press guard, pause, help.
// Without this file (or without JavaScript) every control still works as a
// plain link or form post.
(() => {
  "use strict";
  // A key pressed again within this time after a rating is a double press, not a
  // rating of the next image (the server also treats a repeated post as a no-op).
  const GUARD_MS = 300;
  let lastAction = 0;
  let focusValue = null;
  const $ = (id) => document.getElementById(id);
  const overlay = $("pause-overlay");
  const help = $("help");

  // The rater accepts input once its image is decoded and the guard has passed.
  function arm(root) {
    const r = root.id === "rater" ? root : root.querySelector("#rater");
    if (!r || !r.dataset.assignment) return;
    r.dataset.state = "loading";
    const img = r.querySelector("#current-image");
    const shown = img && img.decode ? img.decode().catch(() => {}) : Promise.resolve();
    shown.then(() => {
      const wait = Math.max(0, GUARD_MS - (Date.now() - lastAction));
      setTimeout(() => { if (r.isConnected) r.dataset.state = "ready"; }, wait);
    });
    if (focusValue !== null) {
      const b = r.querySelector(`.scale button[value="${CSS.escape(focusValue)}"]`);
      if (b) b.focus();
      focusValue = null;
    }
  }

  function ready() {
    const r = $("rater");
    return r && r.dataset.state === "ready" ? r : null;
  }

  function act(button) {
    const r = $("rater");
    r.dataset.state = "busy";
    lastAction = Date.now();
    button.classList.add("pressed");
    button.click();
  }

  // Tell the server, so the images on hold are kept through the break (the
  // forms post the same thing without JavaScript).
  function post(formId) {
    const f = $(formId);
    if (!f) return;
    fetch(f.action, { method: "POST", body: new FormData(f), headers: { "HX-Request": "true" }, credentials: "same-origin" }).catch(() => {});
  }

  function setPaused(on) {
    if (!overlay) return;
    if (on !== !overlay.hidden) post(on ? "pause-form" : "resume-form");
    overlay.hidden = !on;
    document.body.classList.toggle("paused", on);
    (on ? $("resume") : $("pause-link")).focus();
  }

  function toggleHelp() {
    if (!help) return;
    if (help.open) help.close(); else help.showModal();
  }

  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || e.isComposing) return;
    if (e.target.closest && e.target.closest("input,select,textarea")) return;
    if (e.key === "?") { e.preventDefault(); toggleHelp(); return; }
    if (help && help.open) return;
    if (e.key === "p" || e.key === "P") { e.preventDefault(); setPaused(overlay.hidden); return; }
    if (e.repeat || (overlay && !overlay.hidden)) return;
    const r = ready();
    if (!r) return;
    const key = e.key.toLowerCase();
    const button = r.querySelector(`button[data-key="${CSS.escape(key)}"]`);
    if (button && key) { e.preventDefault(); act(button); }
  });

  // Clicks: same guard (a double click must not rate the next image).
  document.addEventListener("click", (e) => {
    const b = e.target.closest && e.target.closest("#rater button");
    if (!b || !e.isTrusted) return;
    if (!ready()) { e.preventDefault(); e.stopPropagation(); return; }
    if (b.value && document.activeElement === b) focusValue = b.value;
    $("rater").dataset.state = "busy";
    lastAction = Date.now();
  }, true);

  document.addEventListener("DOMContentLoaded", () => {
    const h = $("help-link");
    if (h && help) h.addEventListener("click", (e) => { e.preventDefault(); toggleHelp(); });
    const p = $("pause-link");
    if (p && overlay) p.addEventListener("click", (e) => { e.preventDefault(); setPaused(true); });
    const res = $("resume");
    if (res) res.addEventListener("click", (e) => { e.preventDefault(); setPaused(false); });
    if (!window.htmx) { const r = $("rater"); if (r) r.dataset.state = "ready"; return; }
    arm(document.body);
    htmx.onLoad((el) => { if (el !== document.body) arm(el); });
    // A failed request leaves the image in place: say so, allow another try.
    const failed = (msg) => () => {
      const r = $("rater");
      if (!r) return;
      r.dataset.state = "ready";
      let n = r.querySelector(".notice.net");
      if (!n) {
        n = document.createElement("p");
        n.className = "notice net";
        n.setAttribute("role", "alert");
        r.querySelector(".stage").append(n);
      }
      n.textContent = msg;
    };
    document.body.addEventListener("htmx:sendError", failed("No connection. Your answer was not saved: please try again."));
    document.body.addEventListener("htmx:responseError", failed("The server had a problem. Please try again."));
  });
})();
