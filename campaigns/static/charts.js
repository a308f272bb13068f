// Small SVG charts for the dashboard, written by hand: nothing is fetched at run time.
// Every chart is an <svg role="img"> with an aria-label; the numbers it draws are also in a
// table next to it, so the chart is never the only way to read them.
"use strict";

window.Charts = (() => {
  const NS = "http://www.w3.org/2000/svg";

  function svgEl(name, attrs, parent) {
    const node = document.createElementNS(NS, name);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value !== undefined && value !== null) node.setAttribute(key, String(value));
    }
    if (parent) parent.appendChild(node);
    return node;
  }

  function text(parent, x, y, content, attrs) {
    const node = svgEl("text", Object.assign({ x, y }, attrs), parent);
    node.textContent = content;
    return node;
  }

  function title(parent, content) {
    svgEl("title", {}, parent).textContent = content;
  }

  function frame(container, width, height, label) {
    container.replaceChildren();
    const svg = svgEl("svg", {
      viewBox: `0 0 ${width} ${height}`,
      role: "img",
      "aria-label": label,
      class: "chart",
      preserveAspectRatio: "xMidYMid meet",
    });
    container.appendChild(svg);
    return svg;
  }

  // A y-axis top that is a round percentage just above the largest value (at least 10%), so
  // a 3% opt-out rate does not look like a flat line on a 0-100% axis.
  function niceTop(values) {
    const max = Math.max(0.1, ...values.filter((v) => v !== null && v !== undefined));
    const step = max > 0.5 ? 0.2 : 0.1;
    return Math.min(1, Math.ceil(max / step - 1e-9) * step);
  }

  function percentAxis(svg, box, top) {
    const step = top <= 0.2 ? 0.05 : top <= 0.5 ? 0.1 : 0.2; // 2 to 5 round gridlines
    const ticks = Math.round(top / step);
    for (let i = 0; i <= ticks; i += 1) {
      const value = (top * i) / ticks;
      const y = box.bottom - (value / top) * (box.bottom - box.top);
      svgEl("line", { x1: box.left, x2: box.right, y1: y, y2: y, class: "grid" }, svg);
      text(svg, box.left - 8, y + 4, `${Math.round(value * 1000) / 10}%`, {
        class: "tick",
        "text-anchor": "end",
      });
    }
    return (value) => box.bottom - (value / top) * (box.bottom - box.top);
  }

  function marker(parent, shape, x, y, cls) {
    if (shape === "square") {
      return svgEl("rect", { x: x - 5, y: y - 5, width: 10, height: 10, class: cls }, parent);
    }
    return svgEl("circle", { cx: x, cy: y, r: 5.5, class: cls }, parent);
  }

  // kind "line": a stroke with its marker (line charts); "bar": a filled swatch (bar charts)
  function legend(svg, x, y, series, kind = "line") {
    series.forEach((s, i) => {
      const lx = x + i * 130;
      if (kind === "bar") {
        const g = svgEl("g", { class: `bar ${s.cls}` }, svg);
        svgEl("rect", { x: lx + 4, y: y - 7, width: 18, height: 14, class: "fill" }, g);
      } else {
        svgEl("line", { x1: lx, x2: lx + 26, y1: y, y2: y, class: `line ${s.cls}` }, svg);
        marker(svg, s.shape, lx + 13, y, `mark ${s.cls}`);
      }
      text(svg, lx + 34, y + 4, s.name, { class: "legend" });
    });
  }

  /**
   * Rates over days. series: [{name, cls, shape: "circle"|"square", values: [rate|null],
   * notes: [string]}]; a null value breaks the line (no answered calls that day).
   */
  function lineChart(container, days, series, label) {
    const width = 860;
    const height = 300;
    // wide side margins: the first and last date labels are centred on the plot's edges
    const box = { left: 70, right: width - 44, top: 40, bottom: height - 40 };
    const svg = frame(container, width, height, label);
    const y = percentAxis(svg, box, niceTop(series.flatMap((s) => s.values)));
    const span = box.right - box.left;
    const x = (i) => (days.length === 1 ? box.left + span / 2 : box.left + (i * span) / (days.length - 1));
    const every = Math.max(1, Math.ceil(days.length / 12)); // at most ~12 date labels
    days.forEach((day, i) => {
      if (i % every === 0 || i === days.length - 1) {
        text(svg, x(i), box.bottom + 22, day, { class: "tick", "text-anchor": "middle" });
      }
    });
    for (const s of series) {
      let d = "";
      let pen = "M";
      s.values.forEach((v, i) => {
        if (v === null || v === undefined) {
          pen = "M";
          return;
        }
        d += `${pen}${x(i).toFixed(1)},${y(v).toFixed(1)} `;
        pen = "L";
      });
      if (d) svgEl("path", { d: d.trim(), class: `line ${s.cls}` }, svg);
      s.values.forEach((v, i) => {
        if (v === null || v === undefined) return;
        const m = marker(svg, s.shape, x(i), y(v), `mark ${s.cls}`);
        title(m, s.notes[i]);
      });
    }
    legend(svg, box.left, 18, series);
    return svg;
  }

  /**
   * Rates side by side with their confidence interval as a whisker. groups: [{label, bars:
   * [{name, cls, rate, lower, upper, metric, shown, note}]}]; `metric` becomes the data-metric
   * of the value label, `shown` is its text.
   */
  function intervalBars(container, groups, series, label) {
    const width = 860;
    const height = 320;
    const box = { left: 56, right: width - 20, top: 40, bottom: height - 48 };
    const svg = frame(container, width, height, label);
    const all = groups.flatMap((g) => g.bars.flatMap((b) => [b.rate, b.upper]));
    const y = percentAxis(svg, box, niceTop(all));
    const slot = (box.right - box.left) / groups.length;
    const barWidth = Math.min(48, slot / 3);
    groups.forEach((group, gi) => {
      const centre = box.left + slot * (gi + 0.5);
      text(svg, centre, box.bottom + 22, group.label, { class: "tick", "text-anchor": "middle" });
      group.bars.forEach((bar, bi) => {
        const bx = centre + (bi - group.bars.length / 2) * (barWidth + 6) + 3;
        const g = svgEl("g", { class: `bar ${bar.cls}` }, svg);
        title(g, bar.note);
        if (bar.rate === null || bar.rate === undefined) {
          text(g, bx + barWidth / 2, box.bottom - 6, "n/a", {
            class: "value",
            "text-anchor": "middle",
          });
          return;
        }
        svgEl("rect", {
          x: bx,
          y: y(bar.rate),
          width: barWidth,
          height: Math.max(0, box.bottom - y(bar.rate)),
          class: "fill",
        }, g);
        const wx = bx + barWidth / 2;
        svgEl("line", { x1: wx, x2: wx, y1: y(bar.lower), y2: y(bar.upper), class: "whisker" }, g);
        for (const end of [bar.lower, bar.upper]) {
          svgEl("line", { x1: wx - 8, x2: wx + 8, y1: y(end), y2: y(end), class: "whisker" }, g);
        }
        const valueLabel = text(g, wx, y(bar.upper) - 6, bar.shown, {
          class: "value",
          "text-anchor": "middle",
          "data-metric": bar.metric,
          "data-value": String(bar.rate),
        });
        valueLabel.setAttribute("aria-hidden", "true"); // the table says it for screen readers
      });
    });
    legend(svg, box.left, 18, series, "bar");
    return svg;
  }

  /**
   * The call funnel as horizontal bars, each as wide as its share of dialed calls. stages:
   * [{label, calls, parts: [{text, metric?, value?}]}]; parts make the note beside the bar.
   */
  function funnel(container, stages, label) {
    const width = 860;
    const rowHeight = 44;
    const height = stages.length * rowHeight + 12;
    const box = { left: 120, right: width - 170 };
    const svg = frame(container, width, height, label);
    const dialed = stages.length ? stages[0].calls : 0;
    stages.forEach((stage, i) => {
      const top = 6 + i * rowHeight;
      const share = dialed ? stage.calls / dialed : 0;
      text(svg, box.left - 10, top + 26, stage.label, { class: "legend", "text-anchor": "end" });
      svgEl("rect", {
        x: box.left,
        y: top + 6,
        width: box.right - box.left,
        height: rowHeight - 14,
        class: "track",
      }, svg);
      svgEl("rect", {
        x: box.left,
        y: top + 6,
        width: Math.max(share > 0 ? 2 : 0, share * (box.right - box.left)),
        height: rowHeight - 14,
        class: `fill stage-${i}`,
      }, svg);
      const note = text(svg, box.right + 10, top + 26, "", { class: "legend" });
      for (const part of stage.parts) {
        const span = svgEl("tspan", part.metric ? {
          "data-metric": part.metric,
          "data-value": part.value === null ? "" : String(part.value),
        } : {}, note);
        span.textContent = part.text;
      }
    });
    return svg;
  }

  return { lineChart, intervalBars, funnel, svgEl };
})();
