// Live metric plots, warnings and log tail of one training run (no libraries).
// Reads its URLs from #plots data attributes; while the run is queued or running it
// polls the runs API every POLL_MS, appending new metric points, and reloads the page
// once the run finishes so that checkpoints and the final status appear.
"use strict";

(function () {
  const POLL_MS = 5000;
  const COLORS = ["#2156c9", "#d9480f", "#2b8a3e", "#9c36b5", "#e8590c", "#0b7285", "#5f3dc4", "#c2255c"];
  const PANELS = [
    { title: "Loss", match: (n) => /(^|_)loss$/.test(n) && !/aux/.test(n) },
    { title: "Rewards and margins", match: (n) => /^(eval_)?(rewards\/(chosen|rejected|margins)|reward|reward_std|margin|(min|mean|max)_reward|rewards\/.+\/mean)$/.test(n) },
    { title: "Accuracies", match: (n) => /accurac/.test(n) },
    { title: "KL to the reference", match: (n) => /^(eval_)?(kl|objective\/kl)$/.test(n) },
    { title: "Completion lengths", match: (n) => /^(eval_)?(completions\/(mean|min|max)_length|completion_length)$/.test(n) },
    { title: "Entropy", match: (n) => /^(eval_)?entropy$/.test(n) },
    { title: "Log-probabilities", match: (n) => /^(eval_)?logps\//.test(n) },
    { title: "Learning rate", match: (n) => n === "learning_rate" },
    { title: "Gradient norm", match: (n) => n === "grad_norm" },
  ];
  const SKIP = new Set(["epoch", "step", "total_flos", "train_runtime", "train_samples_per_second", "train_steps_per_second"]);

  const root = document.getElementById("plots");
  if (!root) return;
  const urls = {
    metrics: root.dataset.metricsUrl,
    warnings: root.dataset.warningsUrl,
    log: root.dataset.logUrl,
    run: root.dataset.runUrl,
  };
  let series = {};
  let lastStep = null;
  let findings = [];
  let active = root.dataset.active === "1";
  const initialStatus = root.dataset.status;

  function svgEl(name, attrs) {
    const el = document.createElementNS("http://www.w3.org/2000/svg", name);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
    return el;
  }

  function fmt(v, digits = 4) {
    if (v === 0) return "0";
    const a = Math.abs(v);
    if (a >= 1e4 || a < 1e-3) return v.toExponential(Math.max(2, digits - 2));
    return Number(v.toPrecision(digits)).toString();
  }

  function tickDigits(ticks) {
    // The fewest significant digits (3 or more) that keep neighbouring ticks apart:
    // a flat series (entropy 6.3874 to 6.3878) needs more than 3.
    for (let digits = 3; digits < 12; digits++) {
      const labels = ticks.map((t) => fmt(t, digits));
      if (new Set(labels).size === labels.length) return digits;
    }
    return 12;
  }

  function merge(incoming) {
    for (const [name, data] of Object.entries(incoming)) {
      const current = series[name] || { steps: [], values: [] };
      const first = data.steps.length ? data.steps[0] : Infinity;
      const keep = current.steps.findIndex((s) => s >= first);
      if (keep >= 0) {
        current.steps.length = keep;
        current.values.length = keep;
      }
      current.steps.push(...data.steps);
      current.values.push(...data.values);
      series[name] = current;
    }
  }

  function groups() {
    const names = Object.keys(series).filter((n) => !SKIP.has(n) && !/_(runtime|per_second)$/.test(n)).sort();
    const used = new Set();
    const out = [];
    for (const panel of PANELS) {
      const members = names.filter((n) => !used.has(n) && panel.match(n));
      members.forEach((n) => used.add(n));
      if (members.length) out.push({ title: panel.title, names: members });
    }
    const others = names.filter((n) => !used.has(n)).map((n) => ({ title: n, names: [n] }));
    return { main: out, others };
  }

  function drawPanel(panel) {
    const W = 560, H = 236, L = 84, R = 12, T = 12, B = 40;
    const figure = document.createElement("figure");
    figure.className = "plot";
    figure.dataset.panel = panel.title;
    const heading = document.createElement("h3");
    heading.textContent = panel.title;
    figure.appendChild(heading);
    let xmin = Infinity, xmax = -Infinity, ymin = Infinity, ymax = -Infinity;
    for (const name of panel.names) {
      const s = series[name];
      s.steps.forEach((x, i) => {
        const y = s.values[i];
        xmin = Math.min(xmin, x); xmax = Math.max(xmax, x);
        if (y !== null && Number.isFinite(y)) { ymin = Math.min(ymin, y); ymax = Math.max(ymax, y); }
      });
    }
    if (!Number.isFinite(ymin)) { ymin = 0; ymax = 1; }
    if (xmin === xmax) { xmin -= 1; xmax += 1; }
    const nonNegative = ymin >= 0;
    if (ymin === ymax) { const d = Math.abs(ymin) * 0.05 || 1; ymin -= d; ymax += d; }
    const pad = (ymax - ymin) * 0.05;
    ymin -= pad; ymax += pad;
    if (nonNegative && ymin < 0) ymin = 0; // accuracies, lengths, KL: no axis below 0
    const sx = (x) => L + ((x - xmin) / (xmax - xmin)) * (W - L - R);
    const sy = (y) => T + (1 - (y - ymin) / (ymax - ymin)) * (H - T - B);
    const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${panel.title}: ${panel.names.join(", ")} by step` });
    for (const f of findings) {
      if (!f.metrics.some((m) => panel.names.includes(m))) continue;
      const x0 = sx(Math.max(f.step_start, xmin)), x1 = sx(Math.min(f.step_end, xmax));
      const band = svgEl("rect", { x: x0, y: T, width: Math.max(2, x1 - x0), height: H - T - B, fill: f.severity === "critical" ? "#fecaca" : "#fde68a", opacity: "0.5" });
      const tip = svgEl("title");
      tip.textContent = f.title;
      band.appendChild(tip);
      svg.appendChild(band);
    }
    const yticks = [0, 1, 2, 3, 4].map((i) => ymin + ((ymax - ymin) * i) / 4);
    const ydigits = tickDigits(yticks);
    for (const yv of yticks) {
      svg.appendChild(svgEl("line", { x1: L, x2: W - R, y1: sy(yv), y2: sy(yv), stroke: "#e5e7eb" }));
      const label = svgEl("text", { x: L - 6, y: sy(yv) + 6, "text-anchor": "end", class: "plot-axis" });
      label.textContent = fmt(yv, ydigits);
      svg.appendChild(label);
    }
    // Steps are whole numbers: one tick per distinct step (a short run has fewer).
    const xticks = [...new Set([0, 1, 2, 3, 4].map((i) => Math.round(xmin + ((xmax - xmin) * i) / 4)))];
    for (const xv of xticks) {
      const xl = svgEl("text", { x: sx(xv), y: H - B + 20, "text-anchor": "middle", class: "plot-axis plot-xtick" });
      xl.textContent = xv.toString();
      svg.appendChild(xl);
    }
    const xlabel = svgEl("text", { x: W - R, y: H - 2, "text-anchor": "end", class: "plot-axis" });
    xlabel.textContent = "step";
    svg.appendChild(xlabel);
    const legend = document.createElement("div");
    legend.className = "legend";
    panel.names.forEach((name, k) => {
      const color = COLORS[k % COLORS.length];
      const s = series[name];
      let path = "";
      let pen = false;
      s.steps.forEach((x, i) => {
        const y = s.values[i];
        if (y === null || !Number.isFinite(y)) { pen = false; return; }
        path += `${pen ? "L" : "M"}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`;
        pen = true;
      });
      const line = svgEl("path", { d: path, fill: "none", stroke: color, "stroke-width": "1.6", "data-metric": name });
      const tip = svgEl("title");
      tip.textContent = name;
      line.appendChild(tip);
      svg.appendChild(line);
      if (s.steps.length <= 40) {
        s.steps.forEach((x, i) => {
          const y = s.values[i];
          if (y !== null && Number.isFinite(y)) svg.appendChild(svgEl("circle", { cx: sx(x), cy: sy(y), r: 2, fill: color }));
        });
      }
      const item = document.createElement("span");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = color;
      const last = s.values.length ? s.values[s.values.length - 1] : null;
      item.appendChild(swatch);
      item.appendChild(document.createTextNode(`${name}${last === null ? "" : " = " + fmt(last)}`));
      legend.appendChild(item);
    });
    figure.appendChild(svg);
    figure.appendChild(legend);
    return figure;
  }

  function render() {
    const { main, others } = groups();
    if (!main.length && !others.length) return;
    root.replaceChildren();
    const grid = document.createElement("div");
    grid.className = "plots";
    main.forEach((p) => grid.appendChild(drawPanel(p)));
    root.appendChild(grid);
    if (others.length) {
      const details = document.createElement("details");
      const summary = document.createElement("summary");
      summary.textContent = `Other metrics (${others.length})`;
      details.appendChild(summary);
      const more = document.createElement("div");
      more.className = "plots";
      others.forEach((p) => more.appendChild(drawPanel(p)));
      details.appendChild(more);
      root.appendChild(details);
    }
  }

  function renderFindings() {
    const box = document.getElementById("warnings-list");
    if (!box) return;
    box.replaceChildren();
    if (!findings.length) {
      const p = document.createElement("p");
      p.className = "muted";
      p.textContent = "No pitfall detected in the recorded metrics" + (active ? " so far." : ".");
      box.appendChild(p);
      return;
    }
    for (const f of findings) {
      const article = document.createElement("article");
      article.className = `finding finding-${f.severity}`;
      const h = document.createElement("h3");
      h.textContent = f.title;
      const where = document.createElement("p");
      where.className = "finding-where";
      where.textContent = `${f.metrics.join(", ")} · steps ${f.step_start}–${f.step_end}`;
      const why = document.createElement("p");
      why.textContent = f.explanation;
      const advice = document.createElement("p");
      advice.className = "finding-advice";
      const strong = document.createElement("strong");
      strong.textContent = "What to do: ";
      advice.appendChild(strong);
      advice.appendChild(document.createTextNode(f.advice));
      article.append(h, where, why, advice);
      box.appendChild(article);
    }
  }

  async function getJSON(url) {
    const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
    return response.json();
  }

  async function refreshMetrics() {
    // Re-fetch the last step too: its eval row may land after its train row.
    const after = lastStep === null ? "" : `?after_step=${lastStep - 1}`;
    const data = await getJSON(urls.metrics + after);
    merge(data.series);
    if (data.last_step !== null && data.last_step !== undefined) lastStep = Math.max(lastStep ?? data.last_step, data.last_step);
  }

  async function refreshWarnings() {
    findings = (await getJSON(urls.warnings)).warnings;
    renderFindings();
  }

  async function refreshLog() {
    const data = await getJSON(urls.log + "?lines=200");
    const pre = document.getElementById("log-tail");
    if (pre && data.exists) {
      const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.textContent = data.text;
      if (atBottom) pre.scrollTop = pre.scrollHeight;
    }
  }

  async function tick() {
    try {
      const run = await getJSON(urls.run);
      await refreshMetrics();
      await refreshWarnings();
      render();
      await refreshLog();
      if (run.status !== initialStatus && !["queued", "running"].includes(run.status)) {
        window.location.reload();
        return;
      }
      if (run.status !== root.dataset.status) {
        root.dataset.status = run.status;
        const badge = document.querySelector(".run-header .run-status");
        if (badge) {
          badge.className = `run-status run-status-${run.status}`;
          badge.textContent = run.status.charAt(0).toUpperCase() + run.status.slice(1);
        }
      }
    } catch (error) {
      console.warn("run page refresh failed:", error);
    }
    if (active) window.setTimeout(tick, POLL_MS);
  }

  (async function start() {
    try {
      await refreshMetrics();
      findings = (await getJSON(urls.warnings)).warnings;
      render();
    } catch (error) {
      console.warn("could not load metrics:", error);
    }
    if (active) window.setTimeout(tick, POLL_MS);
  })();
})();
