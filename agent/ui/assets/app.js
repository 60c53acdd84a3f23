// The dashboard's few behaviours: a live part replaced by what the agent
// pushes (server-sent events, no polling), a stale mark when the stream
// is silent, confirmations, the log tail and the deploy stream.
(function () {
  "use strict";
  var body = document.body, conn = document.getElementById("conn");
  var heard = 0;
  function mark(live) {
    conn.textContent = live ? "live" : "disconnected: not current";
    conn.className = "conn " + (live ? "live" : "stale");
    body.classList.toggle("stale", !live);
  }
  var es = new EventSource(body.dataset.events);
  es.addEventListener("live", function (e) {
    var box = document.getElementById("live");
    var focused = document.activeElement && document.activeElement.id;
    box.innerHTML = e.data;
    if (focused) { var f = document.getElementById(focused); if (f) f.focus(); }
    heard = Date.now(); mark(true);
  });
  es.addEventListener("beat", function () { heard = Date.now(); mark(true); });
  es.onerror = function () { mark(false); };
  // Three missed heartbeats: what is shown is no longer current.
  setInterval(function () { if (Date.now() - heard > 10000) mark(false); }, 2000);

  document.addEventListener("submit", function (e) {
    var msg = e.target.dataset.confirm;
    if (msg && !window.confirm(msg)) e.preventDefault();
  });

  var logs = document.getElementById("logs");
  if (logs) {
    var sel = document.querySelector(".logpick select");
    var filter = document.getElementById("logfilter"), state = document.getElementById("logstate");
    var svc = new URLSearchParams(location.search).get("service") || (sel && sel.value);
    var apply = function (line) {
      var q = filter.value.toLowerCase();
      line.hidden = q !== "" && line.textContent.toLowerCase().indexOf(q) < 0;
    };
    filter.addEventListener("input", function () { Array.prototype.forEach.call(logs.children, apply); });
    if (svc) {
      state.textContent = "following " + svc;
      var ls = new EventSource("/ui/logs/stream?service=" + encodeURIComponent(svc));
      ls.addEventListener("line", function (e) {
        var l = JSON.parse(e.data), div = document.createElement("div");
        var t = document.createElement("span"); t.className = "t"; t.textContent = (l.time || "").slice(11, 19) + " ";
        var m = document.createElement("span"); m.className = "m"; m.textContent = l.machine + "/" + l.container + " ";
        div.appendChild(t); div.appendChild(m); div.appendChild(document.createTextNode(l.text));
        apply(div);
        div.dataset.t = l.time || "";
        var atEnd = logs.scrollTop + logs.clientHeight >= logs.scrollHeight - 4;
        // Machines' lines arrive merged but not in order (each
        // container's tail comes at once): keep them in time order.
        var before = null;
        for (var n = logs.lastElementChild; n && div.dataset.t && n.dataset.t > div.dataset.t; n = n.previousElementSibling) before = n;
        logs.insertBefore(div, before);
        while (logs.children.length > 2000) logs.removeChild(logs.firstChild);
        if (atEnd) logs.scrollTop = logs.scrollHeight;
      });
      ls.addEventListener("failed", function (e) { state.textContent = "stopped: " + e.data; ls.close(); });
    }
  }

  var dep = document.getElementById("deploy");
  if (dep) {
    var out = document.getElementById("deployout");
    dep.addEventListener("submit", function (e) {
      e.preventDefault();
      var op = e.submitter ? e.submitter.value : "plan";
      if (op === "apply" && !window.confirm("Apply this Compose file to the network?")) return;
      out.textContent = "";
      var buttons = dep.querySelectorAll("button");
      buttons.forEach(function (b) { b.disabled = true; });
      fetch("/ui/deploy/" + op, { method: "POST", body: new URLSearchParams(new FormData(dep)) })
        .then(function (resp) {
          var reader = resp.body.getReader(), dec = new TextDecoder();
          function pump() {
            return reader.read().then(function (r) {
              if (r.done) return;
              out.textContent += dec.decode(r.value, { stream: true });
              out.scrollTop = out.scrollHeight;
              return pump();
            });
          }
          return pump();
        })
        .catch(function (err) { out.textContent += "\nfailed: " + err; })
        .finally(function () { buttons.forEach(function (b) { b.disabled = false; }); });
    });
  }
})();
