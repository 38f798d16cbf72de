// A small SVG line chart of one series over time. Drawn with SVG attributes (no
// inline style), so the page's Content-Security-Policy holds.

const NS = "http://www.w3.org/2000/svg";
const W = 320;
const H = 110;
const PAD = { left: 34, right: 6, top: 8, bottom: 18 };

function svg(tag, attrs = {}) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

function nice(max) {
  if (max <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(max));
  for (const m of [1, 2, 5, 10]) if (m * p >= max) return m * p;
  return 10 * p;
}

/// points: [{ t: Date, v: number }], oldest first; span: seconds shown.
export function lineChart(title, points, { span = 900, kind = "" } = {}) {
  const now = points.length ? points[points.length - 1].t.getTime() : Date.now();
  const start = now - span * 1000;
  const top = nice(Math.max(0, ...points.map((p) => p.v)));
  const x = (t) => PAD.left + ((t - start) / (span * 1000)) * (W - PAD.left - PAD.right);
  const y = (v) => H - PAD.bottom - (v / top) * (H - PAD.top - PAD.bottom);
  const last = points.length ? points[points.length - 1].v : 0;
  const root = svg("svg", {
    viewBox: `0 0 ${W} ${H}`, role: "img", class: `chart ${kind}`,
    "aria-label": `${title}: ${last.toFixed(1)} per second now, at most ${top} per second over the last ${span / 60} minutes`,
  });
  const t = svg("title");
  t.textContent = title;
  root.append(t);
  for (const v of [0, top / 2, top]) {
    root.append(svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v), class: "grid" }));
    const label = svg("text", { x: PAD.left - 4, y: y(v) + 3, class: "axis", "text-anchor": "end" });
    label.textContent = v >= 10 ? Math.round(v) : Number(v.toFixed(1));
    root.append(label);
  }
  for (const [offset, text] of [[span, `-${span / 60} min`], [0, "now"]]) {
    const label = svg("text", { x: x(now - offset * 1000), y: H - 4, class: "axis", "text-anchor": offset ? "start" : "end" });
    label.textContent = text;
    root.append(label);
  }
  const shown = points.filter((p) => p.t.getTime() >= start);
  if (shown.length) {
    const line = shown.map((p) => `${x(p.t.getTime()).toFixed(1)},${y(p.v).toFixed(1)}`).join(" ");
    const first = x(shown[0].t.getTime()).toFixed(1);
    const end = x(shown[shown.length - 1].t.getTime()).toFixed(1);
    root.append(svg("polygon", { points: `${first},${y(0)} ${line} ${end},${y(0)}`, class: "area" }));
    root.append(svg("polyline", { points: line, class: "line" }));
  }
  return root;
}
