// Per-round metrics as inline SVG line charts (one small chart per metric, accuracy and loss
// first), plus the same numbers as a table for screen readers and copying. A list-valued
// metric arrives element by element (name[0], name[1], …): one chart of it, one series per
// element.

import { el, formatNumber } from "./app.js";

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 400;
const HEIGHT = 220;
const MARGIN = { top: 14, right: 16, bottom: 40, left: 48 };
const SERIES_STYLES = 6; // the elements of a list metric cycle through series-0 … series-5

function svg(tag, attributes = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== undefined && value !== null) node.setAttribute(name, String(value));
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Metric names in display order: accuracy, loss, then the others alphabetically. */
export function metricNames(rounds) {
  const names = new Set();
  for (const r of rounds) Object.keys(r.metrics || {}).forEach((n) => names.add(n));
  const rank = (name) => (name === "accuracy" ? 0 : name === "loss" ? 1 : 2);
  return [...names].sort(
    (a, b) => rank(a) - rank(b) || a.localeCompare(b, undefined, { numeric: true }),
  );
}

const ELEMENT = /^(.*)\[(\d+)\](@.*)?$/;

/**
 * Metric names grouped into charts: the elements name[i] of a list metric (per device too:
 * name[i]@device) share the chart of name (name@device); any other name has its own.
 */
export function chartGroups(names) {
  const groups = new Map();
  for (const name of names) {
    const match = ELEMENT.exec(name);
    const chart = match ? `${match[1]}${match[3] || ""}` : name;
    if (!groups.has(chart)) groups.set(chart, []);
    groups.get(chart).push(name);
  }
  return [...groups].map(([name, series]) => ({ name, series }));
}

function niceStep(span, count) {
  const raw = span / Math.max(count, 1);
  const power = 10 ** Math.floor(Math.log10(raw));
  const fraction = raw / power;
  const nice = fraction <= 1 ? 1 : fraction <= 2 ? 2 : fraction <= 5 ? 5 : 10;
  return nice * power;
}

function yDomain(name, values) {
  let min = Math.min(...values);
  let max = Math.max(...values);
  if (/acc/i.test(name) && min >= 0 && max <= 1) return [0, 1];
  min = Math.min(0, min);
  if (max === min) max = min + 1;
  const step = niceStep(max - min, 4);
  return [Math.floor(min / step) * step, Math.ceil(max / step) * step];
}

function ticks(min, max, count) {
  const step = niceStep(max - min, count);
  const out = [];
  for (let v = Math.ceil(min / step) * step; v <= max + step * 1e-6; v += step) {
    out.push(Number(v.toPrecision(12)));
  }
  return out;
}

function label(name) {
  const text = name.replace(/_/g, " ");
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function describe(series, values) {
  return series
    .map(({ name, points }) => {
      const last = points[points.length - 1];
      const head = series.length > 1 ? `${name}: ` : "";
      return `${head}round ${last.round} ${formatNumber(last.value)}`;
    })
    .join("; ") +
    `; lowest ${formatNumber(Math.min(...values))}, highest ${formatNumber(Math.max(...values))}.`;
}

function legend(series) {
  return el(
    "ul",
    { class: "chart-legend" },
    series.map(({ name }, i) =>
      el("li", { dataset: { series: name } },
        el("span", { class: `swatch series-${i % SERIES_STYLES}`, "aria-hidden": "true" }), name),
    ),
  );
}

function chartFigure(name, series, index) {
  const captionId = `chart-${index}-caption`;
  const descId = `chart-${index}-desc`;
  const innerW = WIDTH - MARGIN.left - MARGIN.right;
  const innerH = HEIGHT - MARGIN.top - MARGIN.bottom;
  const points = series.flatMap((s) => s.points);
  const rounds = points.map((p) => p.round);
  const values = points.map((p) => p.value);
  let [x0, x1] = [Math.min(...rounds), Math.max(...rounds)];
  if (x0 === x1) {
    x0 -= 1;
    x1 += 1;
  }
  const [y0, y1] = yDomain(name, values);
  const x = (r) => MARGIN.left + ((r - x0) / (x1 - x0)) * innerW;
  const y = (v) => MARGIN.top + innerH - ((v - y0) / (y1 - y0)) * innerH;

  const count = new Set(rounds).size;
  const description =
    `${label(name)} over ${count} round${count === 1 ? "" : "s"}: ${describe(series, values)}`;

  const chart = svg("svg", {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    role: "img",
    "aria-labelledby": `${captionId} ${descId}`,
    preserveAspectRatio: "xMidYMid meet",
  });
  chart.append(svg("desc", { id: descId }, description));

  const grid = svg("g", { "aria-hidden": "true" });
  for (const v of ticks(y0, y1, 4)) {
    grid.append(
      svg("line", { class: "grid", x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: y(v), y2: y(v) }),
      svg("text", { class: "tick-label", x: MARGIN.left - 8, y: y(v) + 4, "text-anchor": "end" },
        formatNumber(v, 3)),
    );
  }
  const distinct = [...new Set(rounds)];
  const stride = Math.max(1, Math.ceil(distinct.length / 8));
  distinct
    .filter((_, i) => i % stride === 0 || i === distinct.length - 1)
    .forEach((r) => {
      grid.append(
        svg("text", { class: "tick-label", x: x(r), y: HEIGHT - MARGIN.bottom + 18,
          "text-anchor": "middle" }, r),
      );
    });
  grid.append(
    svg("line", { class: "grid", x1: MARGIN.left, x2: MARGIN.left, y1: MARGIN.top,
      y2: HEIGHT - MARGIN.bottom }),
    svg("text", { class: "axis-label", x: MARGIN.left + innerW / 2, y: HEIGHT - 6,
      "text-anchor": "middle" }, "round"),
  );
  chart.append(grid);

  const several = series.length > 1;
  series.forEach(({ name: seriesName, points: line }, i) => {
    const style = several ? ` series-${i % SERIES_STYLES}` : "";
    const named = several ? seriesName : undefined;
    const path = line.map((p, j) => `${j === 0 ? "M" : "L"}${x(p.round).toFixed(1)},${y(p.value).toFixed(1)}`);
    chart.append(svg("path", { class: `series-line${style}`, d: path.join(" "),
      "data-series": named, "aria-hidden": "true" }));
    const dots = svg("g", { class: "series-points" });
    for (const p of line) {
      dots.append(
        svg("circle", { class: `series-point${style}`, cx: x(p.round), cy: y(p.value), r: 4,
          "data-round": p.round, "data-value": p.value, "data-series": named },
        svg("title", {}, `${several ? `${seriesName} ` : ""}round ${p.round}: ${formatNumber(p.value)}`)),
      );
    }
    chart.append(dots);
  });

  return el(
    "figure",
    { class: "chart", dataset: { metric: name } },
    el("figcaption", { id: captionId }, `${label(name)} per round`),
    chart,
    several ? legend(series) : [],
  );
}

function metricsTable(rounds, names) {
  return el(
    "details",
    { class: "metrics-table" },
    el("summary", {}, "Metrics as a table"),
    el(
      "table",
      { class: "responsive" },
      el("caption", { class: "visually-hidden" }, "Metrics per round"),
      el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Round"),
        names.map((n) => el("th", { scope: "col" }, label(n))))),
      el(
        "tbody",
        {},
        rounds.map((r) =>
          el(
            "tr",
            {},
            el("th", { scope: "row", "data-label": "Round" }, r.round),
            names.map((n) => el("td", { "data-label": label(n) }, formatNumber(r.metrics?.[n]))),
          ),
        ),
      ),
    ),
  );
}

/** Draw the metrics of one run into container (replacing what was there). */
export function renderMetrics(container, rounds) {
  const names = metricNames(rounds);
  if (rounds.length === 0 || names.length === 0) {
    container.replaceChildren(el("p", { class: "muted" }, "No rounds reported yet."));
    return;
  }
  const pointsOf = (name) =>
    rounds
      .filter((r) => typeof r.metrics?.[name] === "number")
      .map((r) => ({ round: r.round, value: r.metrics[name] }));
  const charts = chartGroups(names).map(({ name, series }, i) =>
    chartFigure(
      name,
      series.map((member) => ({ name: member, points: pointsOf(member) }))
        .filter((member) => member.points.length),
      i,
    ),
  );
  const table = metricsTable(rounds, names);
  table.open = Boolean(container.querySelector("details.metrics-table[open]"));
  container.replaceChildren(el("div", { class: "charts" }, charts), table);
}
