// The focuser page's chart: position and temperature over the last hour, drawn as plain SVG (no library).
// Drawn in pixels at the element's real size, so text is never stretched; redrawn when the size changes.
const NS = "http://www.w3.org/2000/svg";
const HOUR = 3600;
const PAD = { left: 58, right: 50, top: 12, bottom: 26 };

function el(name, attrs, text) {
  const node = document.createElementNS(NS, name);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function range(values, minSpan) {
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  if (!isFinite(lo)) return null;
  if (hi - lo < minSpan) {
    const mid = (hi + lo) / 2;
    lo = mid - minSpan / 2;
    hi = mid + minSpan / 2;
  }
  const pad = (hi - lo) * 0.08;
  return [lo - pad, hi + pad];
}

// The newest point of a series, marked with a dot (a lone reading is visible too).
function lastDot(points, key, x, y, cls) {
  for (let i = points.length - 1; i >= 0; i--) {
    const v = points[i][key];
    if (v !== null && v !== undefined) return el("circle", { cx: x(points[i].t), cy: y(v), r: 3.5, class: cls });
  }
  return null;
}

// One path through the points that have a value, broken where a value is missing (e.g. while disconnected).
function pathOf(points, key, x, y) {
  let d = "";
  let pen = false;
  for (const p of points) {
    const v = p[key];
    if (v === null || v === undefined) { pen = false; continue; }
    d += (pen ? "L" : "M") + x(p.t).toFixed(1) + " " + y(v).toFixed(1);
    pen = true;
  }
  return d;
}

function fmtTemp(v) { return v.toFixed(1) + "°"; }
function fmtPos(v) { return String(Math.round(v)); }

// points: [{t (unix s), pos (int|null), temp (°C|null)}], oldest first; events: [{time, temperature, steps,
// target, delta_c}] temperature-compensation corrections; now: unix s.
export function drawChart(svg, points, events, now) {
  const width = Math.max(svg.clientWidth || 640, 200);
  const height = Math.max(svg.clientHeight || 240, 120);
  svg.setAttribute("viewBox", "0 0 " + width + " " + height);
  svg.removeAttribute("preserveAspectRatio");
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const shown = points.filter((p) => p.t >= now - HOUR);
  svg.dataset.points = String(shown.length);
  const x0 = PAD.left, x1 = width - PAD.right, y0 = PAD.top, y1 = height - PAD.bottom;
  const x = (t) => x0 + ((t - (now - HOUR)) / HOUR) * (x1 - x0);
  svg.appendChild(el("rect", { x: x0, y: y0, width: x1 - x0, height: y1 - y0, class: "frame" }));
  for (let m = 60; m >= 0; m -= 15) {
    const gx = x(now - m * 60);
    svg.appendChild(el("line", { x1: gx, x2: gx, y1: y0, y2: y1, class: "grid" }));
    svg.appendChild(el("text", { x: gx, y: height - 8, class: "axis-label", "text-anchor": "middle" },
      m === 0 ? "now" : "−" + m + (width > 480 ? " min" : "′")));
  }
  const positions = shown.map((p) => p.pos).filter((v) => v !== null && v !== undefined);
  const temps = shown.map((p) => p.temp).filter((v) => v !== null && v !== undefined);
  const posRange = range(positions.concat(events.map((e) => e.target).filter(Number.isFinite)), 20);
  const tempRange = range(temps, 1);
  if (!posRange && !tempRange) {
    svg.appendChild(el("text", { x: (x0 + x1) / 2, y: (y0 + y1) / 2, class: "axis-label", "text-anchor": "middle" },
      "No readings yet: connect the focuser"));
    return;
  }
  for (let i = 0; i <= 4; i++) {
    const gy = y0 + (i / 4) * (y1 - y0);
    svg.appendChild(el("line", { x1: x0, x2: x1, y1: gy, y2: gy, class: "grid" }));
    if (posRange) {
      const v = posRange[1] - (i / 4) * (posRange[1] - posRange[0]);
      svg.appendChild(el("text", { x: x0 - 6, y: gy + 4, class: "axis-label pos", "text-anchor": "end" }, fmtPos(v)));
    }
    if (tempRange) {
      const v = tempRange[1] - (i / 4) * (tempRange[1] - tempRange[0]);
      svg.appendChild(el("text", { x: x1 + 6, y: gy + 4, class: "axis-label temp" }, fmtTemp(v)));
    }
  }
  if (tempRange) {
    const y = (v) => y1 - ((v - tempRange[0]) / (tempRange[1] - tempRange[0])) * (y1 - y0);
    svg.appendChild(el("path", { d: pathOf(shown, "temp", x, y), class: "temp-line" }));
    const dot = lastDot(shown, "temp", x, y, "temp-dot");
    if (dot) svg.appendChild(dot);
  }
  if (posRange) {
    const y = (v) => y1 - ((v - posRange[0]) / (posRange[1] - posRange[0])) * (y1 - y0);
    svg.appendChild(el("path", { d: pathOf(shown, "pos", x, y), class: "pos-line" }));
    const dot = lastDot(shown, "pos", x, y, "pos-dot");
    if (dot) svg.appendChild(dot);
    for (const e of events) {
      if (!Number.isFinite(e.time) || e.time < now - HOUR || !Number.isFinite(e.target)) continue;
      const mx = x(e.time), my = y(e.target);
      const mark = el("path", { d: "M" + mx + " " + (my - 7) + "l5 9h-10z", class: "mark" });
      const steps = Number(e.steps) > 0 ? "+" + e.steps : String(e.steps);
      mark.appendChild(el("title", {}, "Temperature compensation: " + steps + " steps at " +
        Number(e.temperature).toFixed(2) + " °C"));
      svg.appendChild(mark);
    }
  }
}
