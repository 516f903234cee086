// The page works without this file. With it: the device tables (My devices, and the admin's
// list of every device) follow the server's live state (server-sent events from /events),
// and expiry times count down.
"use strict";

function remaining(until) {
  const seconds = Math.max(0, Math.round((Date.parse(until) - Date.now()) / 1000));
  if (seconds === 0) return "expired";
  const m = Math.floor(seconds / 60), s = seconds % 60;
  return (m ? m + " min " : "") + s + " s";
}

function tickCountdowns() {
  for (const el of document.querySelectorAll("time.countdown")) {
    el.textContent = remaining(el.getAttribute("datetime"));
  }
}

function followDevices(table) {
  const source = new EventSource(table.dataset.live);
  source.addEventListener("devices", (event) => {
    const state = JSON.parse(event.data);
    for (const row of table.querySelectorAll("tr[data-device]")) {
      const device = state[row.dataset.device];
      if (!device) continue;
      const online = row.querySelector("td.online");
      if (online) online.textContent = device.online ? "online" : "offline";
      const cell = row.querySelector("td.state");
      if (cell) cell.textContent = device.state;
      row.className = "state-" + device.state;
      if (device.state === "revoked") {
        const actions = row.querySelector("td.actions");
        if (actions) actions.textContent = "";
      }
      const last = row.querySelector("td.last");
      if (last && device.last_login_at) {
        last.textContent = device.last_login_at.replace("T", " ").replace("+00:00", " UTC") +
          (device.last_login_address ? " from " + device.last_login_address : "");
      }
    }
    if (table.dataset.rows === "fixed") return;  // a filtered list (admin): new rows wait
    const known = new Set([...table.querySelectorAll("tr[data-device]")].map((r) => r.dataset.device));
    if (Object.keys(state).some((id) => !known.has(id))) {
      window.location.reload();  // a device that was just paired: its row is made by the server
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  if (document.querySelector("time.countdown")) {
    tickCountdowns();
    setInterval(tickCountdowns, 1000);
  }
  const table = document.querySelector("table[data-live]");
  if (table && window.EventSource) followDevices(table);
});
