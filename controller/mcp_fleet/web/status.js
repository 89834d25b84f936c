// mcp-fleet status page: fetches api/status and renders it, every data-refresh seconds.
// Everything from the server is inserted as text (never as HTML).
"use strict";
(function () {
  const body = document.body;
  const refreshMs = Math.max(1, Number(body.dataset.refresh) || 5) * 1000;
  const $ = (id) => document.getElementById(id);

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function card(label, value, kind) {
    return el("div", { class: "card " + (kind || "") },
      el("div", { class: "value", text: String(value) }),
      el("div", { class: "label", text: label }));
  }

  function toolsCell(tools) {
    const td = el("td");
    if (Array.isArray(tools)) {
      tools.slice(0, 8).forEach((name) => td.append(el("span", { class: "chip", text: name })));
      if (tools.length > 8) td.append(el("span", { class: "muted", text: "+" + (tools.length - 8) + " more" }));
      if (tools.length === 0) td.append(el("span", { class: "muted", text: "none" }));
    } else if (typeof tools === "number") {
      td.textContent = String(tools);
    } else {
      td.append(el("span", { class: "muted", text: "-" }));
    }
    return td;
  }

  function ago(seconds) {
    if (!seconds) return "";
    const delta = Math.max(0, Date.now() / 1000 - seconds);
    return delta < 90 ? Math.round(delta) + " s ago" : Math.round(delta / 60) + " min ago";
  }

  function render(data) {
    const servers = Array.isArray(data.servers) ? data.servers : [];
    const totals = data.totals || {};
    $("fleet").textContent = data.fleet ? "fleet " + data.fleet : "";
    $("updated").textContent = data.updated_at ? "status " + ago(data.updated_at) : "";
    const summary = $("summary");
    summary.replaceChildren(
      card("servers ready", (totals.ready || 0) + " / " + (totals.servers || servers.length),
        totals.ready === totals.servers ? "ok" : "warn"),
      card("calls / min", totals.calls_per_minute || 0),
      card("errors / min", totals.errors_per_minute || 0, totals.errors_per_minute ? "bad" : "ok"),
      card("in flight", totals.in_flight || 0));

    const problems = [];
    for (const d of data.file_errors || []) problems.push(d.text || d.message);
    for (const [runtime, message] of Object.entries(data.runtime_errors || {})) problems.push(runtime + ": " + message);
    const box = $("problems");
    box.hidden = problems.length === 0;
    box.replaceChildren(el("strong", { text: "Problems" }), el("ul", {}, ...problems.map((p) => el("li", { text: p }))));

    const rows = servers.map((s) => el("tr", { "data-server": s.name },
      el("td", {}, el("strong", { text: s.name })),
      el("td", {}, el("span", { class: "badge " + (s.state || "Unknown"), text: s.state || "Unknown" })),
      el("td", { class: "reason" }, s.reason || "", s.message ? el("small", { text: s.message }) : null),
      el("td", { text: s.runtime || "-" }),
      toolsCell(s.tools),
      el("td", { class: "num", text: String(s.calls_per_minute || 0) }),
      el("td", { class: "num" + (s.errors_per_minute ? " errors" : ""), text: String(s.errors_per_minute || 0) }),
      el("td", { class: "num", text: String(s.in_flight || 0) })));
    if (rows.length === 0) rows.push(el("tr", {}, el("td", { colspan: "8", class: "muted", text: "No servers in this fleet." })));
    $("rows").replaceChildren(...rows);
    $("message").textContent = "";
  }

  async function load() {
    try {
      const response = await fetch("api/status", {
        cache: "no-store", credentials: "same-origin", headers: { accept: "application/json" },
      });
      if (response.status === 401) {
        $("message").textContent = "Signed out: reload the page to sign in again.";
        return;
      }
      if (!response.ok) throw new Error("HTTP " + response.status);
      render(await response.json());
      body.dataset.loaded = "1";
    } catch (err) {
      $("message").textContent = "Cannot load the status: " + err.message;
    }
    setTimeout(load, refreshMs);
  }

  load();
})();
