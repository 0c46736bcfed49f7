// Live dashboard: re-fetch the numbers fragment periodically (paused while the tab
// is hidden) and swap it in place, so the page never fully reloads.
(function () {
  "use strict";
  const box = document.getElementById("dashboard-stats");
  const status = document.getElementById("live-status");
  if (!box) return;
  const url = box.dataset.refreshUrl;
  const seconds = Number(box.dataset.refreshSeconds) || 10;

  async function refresh() {
    if (document.hidden) return;
    try {
      const response = await fetch(url, {
        credentials: "same-origin",
        headers: { "X-Requested-With": "fetch" },
      });
      if (!response.ok) throw new Error("HTTP " + response.status);
      box.innerHTML = await response.text();
      status.textContent = "";
    } catch (error) {
      status.textContent = "Could not refresh (" + error.message + "); retrying.";
    }
  }

  setInterval(refresh, seconds * 1000);
  document.addEventListener("visibilitychange", refresh);
})();
