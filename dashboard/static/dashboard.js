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

  // Event types of a task's stream (agent_task_queue.events) and of the row-following fallback.
  const EVENT_TYPES = ["queued", "running", "llm_started", "llm_delta", "llm_completed", "tool_started",
    "tool_completed", "retrying", "postponed", "completed", "failed", "cancelled", "approval_requested",
    "approved", "rejected", "status", "run"];
  // The task status each event means, for the status badge.
  const STATUS_OF = { queued: "queued", running: "running", retrying: "queued", postponed: "queued",
    completed: "completed", failed: "failed", cancelled: "cancelled", approval_requested: "awaiting_approval",
    approved: "queued", rejected: "queued" };

  function liveEvents() {
    const section = document.querySelector("[data-events]");
    if (!section || !window.EventSource) return;
    const list = document.getElementById("events");
    const streamed = document.getElementById("streamed");
    const badge = document.getElementById("task-status");
    const source = new EventSource(section.dataset.events);

    function setStatus(status) {
      if (!badge || !status) return;
      badge.textContent = status;
      badge.className = "status status-" + status;
      badge.dataset.status = status;
    }

    function show(event) {
      const payload = JSON.parse(event.data);
      const data = payload.data || {};
      if (payload.type === "llm_delta") {
        if (streamed && data.text) streamed.textContent += data.text;  // text, never HTML
        return payload;
      }
      const item = document.createElement("li");
      let text = new Date(payload.at).toLocaleTimeString() + " " + payload.type;
      if (data.name) text += " " + data.name;
      if (data.model) text += " " + data.model;
      if (data.status) text += ": " + data.status;
      if (data.attempt) text += " (attempt " + data.attempt + ")";
      if (data.latency_ms !== undefined) text += ", " + data.latency_ms + " ms";
      if (data.error) text += " — " + data.error;
      item.textContent = text;  // text, never HTML
      list.appendChild(item);
      const status = payload.type === "status" ? data.status : STATUS_OF[payload.type];
      if (status === "awaiting_approval" && badge && badge.dataset.status !== "awaiting_approval") {
        window.setTimeout(function () { window.location.reload(); }, 300);  // show the decision forms
      }
      setStatus(status);
      return payload;
    }

    EVENT_TYPES.forEach(function (type) { source.addEventListener(type, show); });
    source.addEventListener("end", function () {
      source.close();
      window.setTimeout(function () { window.location.reload(); }, 300);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    liveRegions();
    liveEvents();
  });
})();
