// A few lines of plain JS (no build step): live progress while a job runs (the page reloads when it
// completes), and the heat map, which a worker makes on first view.
"use strict";

async function refreshProgress(el) {
  if (el.dataset.complete === "true") return;
  try {
    const r = await fetch(el.dataset.refresh, {credentials: "same-origin"});
    if (r.ok) {
      const s = await r.json();
      const familiarity = document.getElementById("familiarity");
      const fields = [...el.querySelectorAll("[data-field]"), ...(familiarity ? familiarity.querySelectorAll("[data-field]") : [])];
      for (const f of fields) {
        const v = s[f.dataset.field];
        f.textContent = f.dataset.field === "median_familiarity" && v !== null ? Math.round(v) : v;
      }
      // The grid, the familiarity line, the flag counts and the warnings are the server's to render:
      // once the job is done, show them as a page opened now would.
      if (s.complete) { el.dataset.complete = "true"; location.reload(); return; }
    }
  } catch (e) { /* the server may restart; try again */ }
  setTimeout(() => refreshProgress(el), 2000);
}

async function refreshJobs(table) {
  try {
    const r = await fetch(table.dataset.refresh, {credentials: "same-origin"});
    if (r.ok) {
      let running = false;
      for (const j of await r.json()) {
        const row = table.querySelector(`tr[data-job="${j.id}"]`);
        if (!row) continue;
        for (const f of row.querySelectorAll("[data-field]")) f.textContent = j[f.dataset.field];
        running = running || j.pending > 0;
      }
      if (!running) return;
    }
  } catch (e) { /* try again */ }
  setTimeout(() => refreshJobs(table), 3000);
}

async function loadHeatmap(img, tries) {
  const status = document.getElementById("heatmap-status");
  try {
    const r = await fetch(img.dataset.heatmap, {credentials: "same-origin"});
    if (r.status === 200) {
      img.src = img.dataset.heatmap;
      img.hidden = false;
      status.textContent = "Grad-CAM heat map: where the model looked for " + (r.headers.get("X-Explained-Class") || "the predicted class");
      return;
    }
    if (r.status !== 202) { status.textContent = (await r.text()).trim(); return; }
  } catch (e) { /* try again */ }
  if (tries > 60) { status.textContent = "no heat map yet: is a worker running?"; return; }
  setTimeout(() => loadHeatmap(img, tries + 1), 2000);
}

document.addEventListener("DOMContentLoaded", () => {
  const progress = document.getElementById("progress");
  if (progress) refreshProgress(progress);
  const table = document.getElementById("jobs");
  if (table) refreshJobs(table);
  const heat = document.getElementById("heatmap");
  if (heat) loadHeatmap(heat, 0);
});
