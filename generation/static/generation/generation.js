// The generation page's estimate follows the job form as it changes: ticked
// prompts (none = all, after the domain filter), seeds, backend and its price.
// Without JavaScript the server's estimate for the form's first state stays, and
// paid jobs are confirmed on a server-rendered page either way.
(function () {
  "use strict";
  var form = document.getElementById("gen-jobs");
  var pricesEl = document.getElementById("gen-prices");
  if (!form || !pricesEl) return;
  var prices = JSON.parse(pricesEl.textContent);
  var unit = document.getElementById("gen-estimate").dataset.unit;

  function set(name, value) {
    document.querySelector('#gen-estimate [data-est="' + name + '"]').textContent = value;
  }

  function update() {
    var boxes = Array.prototype.slice.call(form.querySelectorAll('input[name="prompts"]'));
    var ticked = boxes.filter(function (b) { return b.checked; });
    var pool = ticked.length ? ticked : boxes;
    var domain = (form.elements.domain.value || "").trim().toLowerCase();
    if (domain) pool = pool.filter(function (b) { return b.dataset.domain === domain; });
    var seeds = parseInt(form.elements.n_seeds.value, 10) || 0;
    var backend = form.elements.backend.value;
    var images = pool.length * seeds;
    set("prompts", pool.length);
    set("seeds", seeds);
    set("images", images);
    set("backend", backend);
    set("cost", (images * (prices[backend] || 0)).toFixed(2) + " " + unit);
  }

  form.addEventListener("change", update);
  form.addEventListener("input", update);
  update();
})();
