// Dashboard: copy buttons for the participant links. Everything else is htmx
// attributes on plain links and forms (which also work without JavaScript).
(() => {
  "use strict";
  document.addEventListener("click", (e) => {
    const b = e.target.closest && e.target.closest("button[data-copy]");
    if (!b) return;
    const input = document.getElementById(b.dataset.copy);
    if (!input) return;
    input.select();
    const done = () => { b.textContent = "Copied"; setTimeout(() => { b.textContent = "Copy"; }, 1500); };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(input.value).then(done, () => { document.execCommand("copy"); done(); });
    } else { document.execCommand("copy"); done(); }
  });
})();
