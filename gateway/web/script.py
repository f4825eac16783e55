"""The pages' JavaScript, served at /static/dashboard.js. It only adds to
pages that read fine without it:

- live updates: an EventSource on /api/v1/events; each `block` event sets
  the elements marked data-live="<field>" (height, hash, tx_per_s, ...) and
  reloads, at most every 2 s, the sections marked data-refresh="<url>"
  (server-rendered HTML fragments: tables, SVG charts);
- the transaction page's proof check: the receipt leaf's audit path
  (RFC 9162 2.1.3.2, the same algorithm as shared/merkle.py verify) hashed
  with the browser's Web Crypto SHA-256 against the block header's
  receipts_root; the result goes into #proof-result.
"""

JS = r"""
"use strict";
(function () {
  function hex2bytes(h) {
    var a = new Uint8Array(h.length / 2);
    for (var i = 0; i < a.length; i++) a[i] = parseInt(h.substr(2 * i, 2), 16);
    return a;
  }
  function bytes2hex(b) {
    return Array.prototype.map.call(new Uint8Array(b), function (x) {
      return ("0" + x.toString(16)).slice(-2); }).join("");
  }
  function cat(a, b, c) {
    var out = new Uint8Array(a.length + b.length + (c ? c.length : 0));
    out.set(a, 0); out.set(b, a.length); if (c) out.set(c, a.length + b.length);
    return out;
  }
  async function sha(b) { return new Uint8Array(await crypto.subtle.digest("SHA-256", b)); }

  // RFC 9162 2.1.3.2: is `leaf` at `index` of a `size`-leaf tree with root `root`?
  async function verify(leaf, index, size, path, root) {
    if (index < 0 || index >= size) return false;
    var fn = index, sn = size - 1;
    var r = await sha(cat(new Uint8Array([0]), leaf));
    for (var i = 0; i < path.length; i++) {
      var p = path[i];
      if (sn === 0) return false;
      if ((fn & 1) === 1 || fn === sn) {
        r = await sha(cat(new Uint8Array([1]), p, r));
        if ((fn & 1) === 0) { while ((fn & 1) === 0 && fn !== 0) { fn >>= 1; sn >>= 1; } }
      } else {
        r = await sha(cat(new Uint8Array([1]), r, p));
      }
      fn >>= 1; sn >>= 1;
    }
    return sn === 0 && bytes2hex(r) === bytes2hex(root);
  }

  async function checkProof() {
    var el = document.getElementById("proof");
    var out = document.getElementById("proof-result");
    if (!el || !out) return;
    if (!(window.crypto && crypto.subtle)) {
      out.textContent = "this browser cannot check it: Web Crypto needs https or localhost";
      out.className = "bad";
      return;
    }
    var path = el.dataset.path ? el.dataset.path.split(",").map(hex2bytes) : [];
    var ok = await verify(hex2bytes(el.dataset.leaf), parseInt(el.dataset.index, 10),
                          parseInt(el.dataset.size, 10), path, hex2bytes(el.dataset.root));
    out.textContent = ok ? "proof verified in this browser (Web Crypto SHA-256): the receipt " +
      "is in the block's receipts_root" : "proof NOT verified in this browser";
    out.className = ok ? "good" : "bad";
    out.dataset.verified = ok ? "yes" : "no";
  }

  var lastRefresh = 0, pending = false;
  function refreshSections() {
    var now = Date.now();
    if (now - lastRefresh < 2000) {
      if (!pending) { pending = true; setTimeout(function () { pending = false; refreshSections(); }, 2000); }
      return;
    }
    lastRefresh = now;
    document.querySelectorAll("[data-refresh]").forEach(function (el) {
      fetch(el.dataset.refresh, {headers: {"Accept": "text/html"}}).then(function (r) {
        return r.ok ? r.text() : null; }).then(function (t) { if (t !== null) el.innerHTML = t; })
        .catch(function () {});
    });
  }

  function live() {
    if (!window.EventSource) return;
    var es = new EventSource("/api/v1/events");
    es.addEventListener("block", function (ev) {
      var d = JSON.parse(ev.data);
      document.querySelectorAll("[data-live]").forEach(function (el) {
        var k = el.dataset.live;
        if (d[k] !== undefined) el.textContent = String(d[k]);
      });
      var st = document.getElementById("live-state");
      if (st) st.textContent = "live";
      refreshSections();
    });
    es.onerror = function () {
      var st = document.getElementById("live-state");
      if (st) st.textContent = "reconnecting";
    };
  }

  document.addEventListener("DOMContentLoaded", function () { checkProof(); live(); });
})();
"""
