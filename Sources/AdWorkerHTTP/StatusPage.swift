/// The page at `/`: polls `/status` and `/readyz` every two seconds and renders the streams and
/// consumers tables, plus three charts of `/status`'s history (rows/s, lag, p99 latency), one line
/// per stream. Self-contained (inline SVG and plain JS, nothing fetched but those two endpoints), so
/// it works wherever the worker's port is reachable. A raw string: the script's `\` and `${…}` stay as written.
enum StatusPage {
    static let html = #"""
        <!doctype html>
        <html><head><meta charset="utf-8"><title>adworker</title>
        <style>body{font:14px system-ui,sans-serif;margin:2em}table{border-collapse:collapse}
        td,th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:right}th:first-child,td:first-child{text-align:left}
        .bad{color:#b00}.good{color:#070}
        #charts{display:flex;flex-wrap:wrap;gap:1em 2em}#charts svg{width:360px;height:170px;font-size:11px;fill:#444}
        #legend span{margin-right:1.5em}#legend i{display:inline-block;width:14px;height:3px;margin-right:5px;vertical-align:middle}</style></head>
        <body><h1>adworker <span id="ready"></span></h1><p id="meta"></p>
        <table id="streams"><thead><tr><th>stream</th><th>rows/s</th><th>p50 ms</th><th>p95 ms</th><th>p99 ms</th>
        <th>queue</th><th>lag</th><th>pending</th><th>error rate</th><th>failed attempts</th></tr></thead><tbody></tbody></table>
        <h2>last minutes</h2><p id="legend"></p>
        <div id="charts"><svg id="chart-rows" viewBox="0 0 360 170" data-key="rowsPerSecond" data-title="rows/s"></svg>
        <svg id="chart-lag" viewBox="0 0 360 170" data-key="lag" data-title="lag (entries)"></svg>
        <svg id="chart-p99" viewBox="0 0 360 170" data-key="latencyP99Milliseconds" data-title="p99 latency (ms)"></svg></div>
        <h2>consumers</h2><table id="consumers"><thead><tr><th>consumer</th><th>stream</th><th>state</th><th>open circuits</th></tr></thead><tbody></tbody></table>
        <script>
        const cell = v => `<td>${v ?? "–"}</td>`;
        const esc = s => String(s).replace(/[&<>"]/g, c => `&#${c.charCodeAt(0)};`);
        const colour = i => ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#17becf"][i % 6];
        const label = v => v >= 1e4 ? `${+(v / 1e3).toFixed(1)}k` : `${+v.toFixed(v < 10 ? 2 : 1)}`;
        const clock = t => new Date(t * 1000).toTimeString().slice(0, 8);
        // The plot box inside each 360×170 chart (x0, y0 top left); the margins hold the title and the axis labels.
        const x0 = 44, x1 = 350, y0 = 24, y1 = 150;

        // One <polyline> per stream over the history's time span. The plotted figures are also written on
        // the elements (data-times on the <svg>, data-values on each line, empty where a point has none)
        // so that a browser test can compare them with /status.
        function draw(svg, points, names) {
          const key = svg.dataset.key, times = points.map(p => p.time);
          // Swift's encoder leaves a nil figure out; a stream may also be missing from older points.
          const series = names.map(n => points.map(p => p.streams[n]?.[key] ?? null));
          const max = Math.max(0, ...series.flat().filter(v => v !== null));
          const t0 = times[0], span = times.at(-1) - t0;
          const x = t => x0 + (span > 0 ? (t - t0) / span : 1) * (x1 - x0);  // one point: at the right, "now"
          const y = v => y1 - (max > 0 ? v / max : 0) * (y1 - y0);
          svg.dataset.times = times.join(",");
          svg.innerHTML = `<text x="${x0}" y="14" font-size="12" font-weight="bold" fill="#222">${svg.dataset.title}</text>`
            + `<path d="M${x0} ${y0}H${x1}" stroke="#ddd"/><path d="M${x0} ${y0}V${y1}H${x1}" fill="none" stroke="#999"/>`
            + (points.length ? `<text x="${x0 - 4}" y="${y0 + 4}" text-anchor="end">${label(max)}</text><text x="${x0 - 4}" y="${y1}" text-anchor="end">0</text>`
              + `<text x="${x0}" y="${y1 + 15}">${clock(t0)}</text><text x="${x1}" y="${y1 + 15}" text-anchor="end">${clock(times.at(-1))}</text>`
              : `<text x="${(x0 + x1) / 2}" y="${(y0 + y1) / 2}" text-anchor="middle">no history yet</text>`)
            + series.map((values, i) => {
              // A point without a figure is left out of the line, which joins its neighbours.
              const xy = values.flatMap((v, j) => v === null ? [] : [`${x(times[j]).toFixed(1)},${y(v).toFixed(1)}`]);
              // A dot on the newest figure: a line of one point would not show.
              const newest = xy.at(-1)?.split(",");
              const dot = newest ? `<circle cx="${newest[0]}" cy="${newest[1]}" r="2.5" fill="${colour(i)}"/>` : "";
              return `<polyline data-stream="${esc(names[i])}" data-values="${values.map(v => v ?? "").join(",")}" points="${xy.join(" ")}"`
                + ` fill="none" stroke="${colour(i)}" stroke-width="1.5"/>${dot}`;
            }).join("");
        }

        async function refresh() {
          const ready = await fetch("/readyz").then(r => r.json().then(b => [r.ok, b])).catch(() => [false, {reasons: ["unreachable"]}]);
          document.getElementById("ready").innerHTML = ready[0] ? '<span class="good">ready</span>' : `<span class="bad">not ready: ${(ready[1].reasons || []).join("; ")}</span>`;
          const s = await fetch("/status").then(r => r.json());
          document.getElementById("meta").textContent = `version ${s.version}, up ${Math.round(s.uptimeSeconds)} s`;
          document.querySelector("#streams tbody").innerHTML = s.streams.map(t => "<tr>" + [t.stream, t.rowsPerSecond.toFixed(1),
            t.latencyP50Milliseconds, t.latencyP95Milliseconds, t.latencyP99Milliseconds, t.queueLength, t.lag, t.pending,
            (t.errorRate * 100).toFixed(2) + " %", t.failedAttempts].map(cell).join("") + "</tr>").join("");
          document.querySelector("#consumers tbody").innerHTML = s.consumers.map(c => "<tr>" + [c.consumer, c.stream, c.state,
            c.openCircuits.join(", ")].map(cell).join("") + "</tr>").join("");
          // Sorted, so that a stream keeps its colour from one refresh to the next.
          const points = s.history?.points ?? [];
          const names = [...new Set([...s.streams.map(t => t.stream), ...points.flatMap(p => Object.keys(p.streams))])].sort();
          document.getElementById("legend").innerHTML = names.map((n, i) => `<span><i style="background:${colour(i)}"></i>${esc(n)}</span>`).join("");
          document.querySelectorAll("#charts svg").forEach(svg => draw(svg, points, names));
          document.body.dataset.chartsRendered = String(points.length);
        }
        refresh(); setInterval(refresh, 2000);
        </script></body></html>
        """#
}
