// Agent Task Queue dashboard: live refresh of [data-live] regions (with a freeze toggle remembered per
// browser) and a task's live events. No inline script (the Content-Security-Policy forbids it); the
// server renders and escapes every fragment, this file only swaps them in.
"use strict";

(function () {
  const FROZEN_KEY = "agentq-dashboard-frozen";

  function refreshSeconds() {
    const value = parseFloat(document.body.dataset.refreshS || "5");
    return Number.isFinite(value) && value > 0 ? value : 5;
  }

  function setUpdated(text) {
    const label = document.getElementById("updated");
    if (label) label.textContent = text;
  }

  function liveRegions() {
    const region = document.querySelector("[data-live]");
    const toggle = document.getElementById("freeze");
    if (!region) return;
    let frozen = window.localStorage.getItem(FROZEN_KEY) === "1";
    let busy = false;

    function showState() {
      if (!toggle) return;
      toggle.setAttribute("aria-pressed", frozen ? "true" : "false");
      toggle.textContent = frozen ? "Resume live updates" : "Freeze";
      if (frozen) setUpdated("Frozen");
    }

    async function refresh() {
      if (frozen || busy || document.hidden) return;
      busy = true;
      try {
        const response = await fetch(region.dataset.live, {
          credentials: "same-origin",
          headers: { "Accept": "text/html" },
        });
        if (response.redirected || response.status === 401) {
          window.location.reload();
          return;
        }
        if (!response.ok) {
          setUpdated("Update failed (HTTP " + response.status + ")");
          return;
        }
        region.innerHTML = await response.text();
        setUpdated("Updated " + new Date().toLocaleTimeString());
      } catch (error) {
        setUpdated("Update failed: " + error);
      } finally {
        busy = false;
      }
    }

    if (toggle) {
      toggle.addEventListener("click", function () {
        frozen = !frozen;
        window.localStorage.setItem(FROZEN_KEY, frozen ? "1" : "0");
        showState();
        if (!frozen) refresh();
      });
    }
    showState();
    if (!frozen) setUpdated("Live");
    window.setInterval(refresh, refreshSeconds() * 1000);
  }

  function liveEvents() {
    const section = document.querySelector("[data-events]");
    if (!section || !window.EventSource) return;
    const list = document.getElementById("events");
    const badge = document.getElementById("task-status");
    const source = new EventSource(section.dataset.events);

    function show(event) {
      const payload = JSON.parse(event.data);
      const item = document.createElement("li");
      const data = payload.data || {};
      let text = new Date(payload.at).toLocaleTimeString() + " " + payload.type;
      if (data.status) text += ": " + data.status;
      if (data.attempt) text += " (attempt " + data.attempt + ")";
      if (data.error) text += " — " + data.error;
      item.textContent = text;  // text, never HTML
      list.appendChild(item);
      if (payload.type === "status" && badge && data.status) {
        badge.textContent = data.status;
        badge.className = "status status-" + data.status;
        badge.dataset.status = data.status;
      }
      return payload;
    }

    ["status", "run"].forEach(function (type) { source.addEventListener(type, show); });
    source.addEventListener("end", function (event) {
      show(event);
      source.close();
      window.setTimeout(function () { window.location.reload(); }, 500);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    liveRegions();
    liveEvents();
  });
})();
