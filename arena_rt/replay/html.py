"""The HTML report: one self-contained page (inline CSS and SVG; no script, no external file)."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from typing import Any

from arena_rt.replay.histogram import Histogram

W, H = 760, 260
PAD_L, PAD_R, PAD_T, PAD_B = 60, 16, 30, 40
COLORS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563", "#ca8a04")

Point = tuple[float, float]


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _nice_step(span: float, ticks: int = 5) -> float:
    if span <= 0:
        return 1.0
    raw = span / ticks
    power = 10 ** math.floor(math.log10(raw))
    for mult in (1.0, 2.0, 2.5, 5.0, 10.0):
        if raw <= mult * power:
            return float(mult * power)
    return float(10 * power)


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}".rstrip("0").rstrip(".")
    return f"{v:.2f}".rstrip("0").rstrip(".")


def _marker(
    x: float, top: float, bottom: float, label: str, dy: float = 0, low: bool = False
) -> str:
    """A dashed vertical line with its label, which turns left near the right edge."""
    right = x > W - PAD_R - 90
    tx = x - 3 if right else x + 3
    anchor = ' text-anchor="end"' if right else ""
    ty = bottom - 4 - dy if low else top + 10 + dy
    return (
        f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{bottom}" class="m"/>'
        f'<text x="{tx:.1f}" y="{ty}" class="ml"{anchor}>{_esc(label)}</text>'
    )


def line_chart(
    title: str,
    series: Sequence[tuple[str, Sequence[Point]]],
    x_label: str,
    y_label: str,
    markers: Sequence[tuple[float, str]] = (),
    x_ticks: Sequence[tuple[float, str]] | None = None,
    x_range: tuple[float, float] | None = None,
) -> str:
    points = [p for _, pts in series for p in pts]
    if not points:
        return f'<div class="chart empty"><h3>{_esc(title)}</h3><p>no data</p></div>'
    x_min = (
        min(min(p[0] for p in points), *(m[0] for m in markers))
        if markers
        else min(p[0] for p in points)
    )
    x_max = max(p[0] for p in points)
    if x_range is not None:
        x_min, x_max = x_range
    if x_max <= x_min:
        x_max = x_min + 1
    y_max = max(p[1] for p in points) * 1.08 or 1.0
    step = _nice_step(y_max)
    y_max = math.ceil(y_max / step) * step
    pw, ph = W - PAD_L - PAD_R, H - PAD_T - PAD_B

    def sx(x: float) -> float:
        return PAD_L + (x - x_min) / (x_max - x_min) * pw

    def sy(y: float) -> float:
        return PAD_T + ph - (y / y_max) * ph

    out = [f'<svg viewBox="0 0 {W} {H}" role="img" aria-label="{_esc(title)}">']
    out.append(f'<text x="{PAD_L}" y="18" class="t">{_esc(title)}</text>')
    y = 0.0
    while y <= y_max + 1e-9:
        out.append(
            f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" class="g"/>'
            f'<text x="{PAD_L - 6}" y="{sy(y) + 4:.1f}" class="yl">{_fmt(y)}</text>'
        )
        y += step
    if x_ticks is None:
        xstep = _nice_step(x_max - x_min, 8)
        x = math.ceil(x_min / xstep) * xstep
        ticks = []
        while x <= x_max + 1e-9:
            ticks.append((x, _fmt(x)))
            x += xstep
    else:
        ticks = list(x_ticks)
    for x, label in ticks:
        out.append(
            f'<line x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{PAD_T + ph}" y2="{PAD_T + ph + 4}" '
            f'class="a"/><text x="{sx(x):.1f}" y="{PAD_T + ph + 16}" class="xl">'
            f"{_esc(label)}</text>"
        )
    out.append(
        f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{PAD_T + ph}" y2="{PAD_T + ph}" class="a"/>'
        f'<text x="{PAD_L + pw / 2}" y="{H - 6}" class="xl">{_esc(x_label)}</text>'
        f'<text x="14" y="{PAD_T + ph / 2}" class="xl" transform="rotate(-90 14 '
        f'{PAD_T + ph / 2})">{_esc(y_label)}</text>'
    )
    for mx, label in markers:
        out.append(_marker(sx(mx), PAD_T, PAD_T + ph, label, low=True))
    legend_x = PAD_L + 8
    for i, (label, pts) in enumerate(series):
        color = COLORS[i % len(COLORS)]
        if pts:
            path = " ".join(f"{sx(px):.1f},{sy(py):.1f}" for px, py in pts)
            out.append(
                f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="1.6"/>'
            )
            if len(pts) == 1:
                out.append(
                    f'<circle cx="{sx(pts[0][0]):.1f}" cy="{sy(pts[0][1]):.1f}" r="3" '
                    f'fill="{color}"/>'
                )
        out.append(
            f'<rect x="{legend_x}" y="{PAD_T + 2}" width="10" height="10" fill="{color}"/>'
            f'<text x="{legend_x + 14}" y="{PAD_T + 11}" class="lg">{_esc(label)}</text>'
        )
        legend_x += 24 + 7 * len(label)
    out.append("</svg>")
    return '<div class="chart">' + "".join(out) + "</div>"


def histogram_chart(title: str, hist: Histogram, unit_scale: float = 1000.0) -> str:
    """Counts per log-spaced latency bin (x in ms, log scale), with p50/p99 marked."""
    if hist.count == 0:
        return f'<div class="chart empty"><h3>{_esc(title)}</h3><p>no data</p></div>'
    lo = max(hist.min, 1) / unit_scale
    hi = max(hist.max, hist.min + 1) / unit_scale
    lo_log, hi_log = math.log10(lo), math.log10(hi)
    if hi_log - lo_log < 0.5:
        lo_log, hi_log = lo_log - 0.25, hi_log + 0.25
    nbins = 48
    width = (hi_log - lo_log) / nbins
    counts = [0] * nbins
    for low, high, n in hist.bins():
        mid = max((low + high) / 2, 1) / unit_scale
        i = min(max(int((math.log10(mid) - lo_log) / width), 0), nbins - 1)
        counts[i] += n
    top = max(counts) or 1
    pw, ph = W - PAD_L - PAD_R, H - PAD_T - PAD_B
    bw = pw / nbins

    def sx(ms: float) -> float:
        return PAD_L + (math.log10(max(ms, 1e-9)) - lo_log) / (hi_log - lo_log) * pw

    out = [f'<svg viewBox="0 0 {W} {H}" role="img" aria-label="{_esc(title)}">']
    out.append(f'<text x="{PAD_L}" y="18" class="t">{_esc(title)} (n={hist.count:,})</text>')
    for i, n in enumerate(counts):
        if n:
            h = n / top * ph
            out.append(
                f'<rect x="{PAD_L + i * bw + 0.5:.1f}" y="{PAD_T + ph - h:.1f}" '
                f'width="{max(bw - 1, 0.5):.1f}" height="{h:.1f}" class="bar">'
                f"<title>{n:,}</title></rect>"
            )
    decade = math.floor(lo_log)
    while decade <= hi_log:
        for mult in (1, 2, 5):
            v = mult * 10**decade
            if lo_log <= math.log10(v) <= hi_log:
                out.append(
                    f'<line x1="{sx(v):.1f}" x2="{sx(v):.1f}" y1="{PAD_T + ph}" '
                    f'y2="{PAD_T + ph + 4}" class="a"/>'
                    f'<text x="{sx(v):.1f}" y="{PAD_T + ph + 16}" class="xl">{_fmt(v)}</text>'
                )
        decade += 1
    for i, (p, label) in enumerate(((50, "p50"), (99, "p99"))):
        v = hist.percentile(p) / unit_scale
        out.append(_marker(sx(v), PAD_T, PAD_T + ph, f"{label} {_fmt(v)} ms", dy=12 * i))
    out.append(
        f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{PAD_T + ph}" y2="{PAD_T + ph}" class="a"/>'
        f'<text x="{PAD_L + pw / 2}" y="{H - 6}" class="xl">latency, ms (log scale)</text>'
        f'<text x="{PAD_L - 6}" y="{PAD_T + 8}" class="yl">{top:,}</text>'
        f'<text x="{PAD_L - 6}" y="{PAD_T + ph}" class="yl">0</text>'
    )
    out.append("</svg>")
    return '<div class="chart">' + "".join(out) + "</div>"


def percentile_chart(title: str, hists: Sequence[tuple[str, Histogram]]) -> str:
    """Latency by percentile on a 'nines' axis (0, 90, 99, 99.9, 99.99), like HdrHistogram plots."""
    nines = [i / 20 for i in range(0, 81)]  # 0 .. 4 nines in steps of 0.05
    series = []
    for label, hist in hists:
        if hist.count:
            pts = [(n, hist.percentile(100 * (1 - 10**-n)) / 1000) for n in nines]
            series.append((label, pts))
    ticks = [(0.0, "0%"), (1.0, "90%"), (2.0, "99%"), (3.0, "99.9%"), (4.0, "99.99%")]
    return line_chart(title, series, "percentile", "ms", x_ticks=ticks)


def _table(rows: Sequence[Sequence[Any]], head: Sequence[str] | None = None) -> str:
    out = ["<table>"]
    if head:
        out.append("<tr>" + "".join(f"<th>{_esc(h)}</th>" for h in head) + "</tr>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>")
    out.append("</table>")
    return "".join(out)


CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1000px;color:#111;
padding:0 12px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
.pass{color:#15803d}.fail{color:#b91c1c}table{border-collapse:collapse;margin:8px 0}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;font-variant-numeric:tabular-nums}
th{background:#f4f4f5}.chart{margin:10px 0}svg{width:100%;max-width:760px;height:auto}
.t{font-weight:600;font-size:13px}.g{stroke:#eee}.a{stroke:#888}.m{stroke:#111;stroke-dasharray:3 3}
.xl{font-size:11px;text-anchor:middle;fill:#444}.yl{font-size:11px;text-anchor:end;fill:#444}
.ml{font-size:10px;fill:#111}.lg{font-size:11px;fill:#222}.bar{fill:#2563eb}
code,pre{font-size:12px;background:#f4f4f5;padding:1px 4px}pre{padding:8px;overflow:auto;
white-space:pre-wrap}
.warn{background:#fef3c7;padding:6px 10px;border:1px solid #f59e0b}
"""


def render_html(report: dict[str, Any]) -> str:
    s = report["summary"]
    cfg = report["config"]
    lat = report["latencyMs"]
    hists = {k: Histogram.from_dict(v) for k, v in report["histograms"].items()}
    go = report["phases"].get("go", 0.0)
    timeline = report["timeline"]
    verdict = "PASS" if report["ok"] else "FAIL"
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        "<meta name=viewport content='width=device-width,initial-scale=1'>",
        f"<title>arena-rt replay {verdict} {_esc(report['startedAt'])}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>arena-rt replay — <span class={verdict.lower()}>{verdict}</span></h1>",
        f"<p>{_esc(report['startedAt'])} · targets {_esc(', '.join(cfg['targets']))} · "
        f"{_esc(cfg['source'])} · {cfg['battles']} battles x {cfg['spectatorsPerBattle']} "
        f"spectators · {_esc(cfg['pacing'])} · {cfg['workers']} client workers</p>",
        f"<p>Machine: {report['machine']['cpus']} CPUs, {_esc(report['machine']['platform'])}, "
        f"Python {_esc(report['machine']['python'])}. {_esc(report['machine']['note'])}.</p>",
        f"<pre>{_esc(' '.join(report['command']))}</pre>",
    ]
    if report["client"]["saturated"]:
        parts.append(
            "<p class=warn>A client worker ran at ≥ 90 % CPU during the run: the latencies "
            "include client queueing. Add <code>--workers</code> or run the client elsewhere.</p>"
        )
    parts.append("<h2>Gates</h2>")
    parts.append(
        _table(
            [
                (g["name"], g["value"], g["limit"], "ok" if g["ok"] else "FAIL")
                for g in report["gates"]
            ],
            ("gate", "value", "limit", ""),
        )
    )
    b = s["battles"]
    parts.append("<h2>Summary</h2>")
    parts.append(
        _table(
            [
                ("battles completed", f"{b['completed']} / {b['planned']} {b['completedByMode']}"),
                (
                    "cancelled / not seated / stalled / incomplete",
                    f"{b['cancelled']} / {b['notSeated']} / {b['stalled']} / {b['incomplete']}",
                ),
                ("events (completed battles)", f"{s['events']:,}"),
                (
                    "deliveries",
                    f"{s['deliveries']:,} (expected {s['deliveriesExpected']:,}; "
                    f"events x spectators {s['eventsTimesSpectators']:,}; "
                    f"lost {s['lostDeliveries']:,})",
                ),
                ("deliveries/s", f"{s['deliveriesPerSec']:,} over {s['playSeconds']} s"),
                (
                    "turns sent / acked",
                    f"{s['turns']['sent']:,} / {s['turns']['acked']:,} ({s['turnsPerSec']}/s)",
                ),
                (
                    "spectator connects",
                    f"{s['connects']['spectators']:,} in "
                    f"{s['connects']['connectPhaseSeconds']} s "
                    f"({s['connects']['spectatorConnectsPerSec']:,}/s)",
                ),
                (
                    "agent connects / reconnects",
                    f"{s['connects']['agents']:,} / {s['connects']['reconnects']}",
                ),
                ("errors", f"{s['errors']} {s['errorsByCode'] or ''}"),
                ("close codes", s["closeCodes"] or "none"),
                ("slow-consumer drops (4008)", s["slowDrops"]),
            ]
        )
    )
    parts.append("<h2>Latency (ms)</h2>")
    names = {
        "turnAck": "turn submit → ack",
        "turnDelivery": "turn submit → spectator",
        "connectSpectator": "spectator connect → snapshot",
        "connectAgent": "agent connect → welcome",
        "eventLag": "event `at` → spectator (ms clock)",
    }
    parts.append(
        _table(
            [
                (
                    names.get(k, k),
                    v["count"],
                    v["p50"],
                    v["p90"],
                    v["p99"],
                    v["p999"],
                    v["max"],
                    v["mean"],
                )
                for k, v in lat.items()
            ],
            ("", "n", "p50", "p90", "p99", "p99.9", "max", "mean"),
        )
    )

    def series(key: str) -> list[Point]:
        return [(r["t"], r[key]) for r in timeline if key in r]

    markers = [(go, "go")]
    span = (0.0, max(report["phases"].get("end", 0.0), go + 1.0))
    parts.append("<h2>Over time</h2>")
    parts.append(
        line_chart(
            "turn → spectator and turn → ack latency per interval",
            [
                ("spect p50", series("deliveryP50Ms")),
                ("spect p99", series("deliveryP99Ms")),
                ("ack p50", series("ackP50Ms")),
                ("ack p99", series("ackP99Ms")),
            ],
            "seconds since start",
            "ms",
            markers,
            x_range=span,
        )
    )
    parts.append(
        line_chart(
            "deliveries per second (spectator event frames)",
            [("deliveries/s", series("deliveriesPerSec"))],
            "seconds since start",
            "frames/s",
            markers,
            x_range=span,
        )
    )
    parts.append(
        line_chart(
            "connects, turns sent and errors per interval",
            [
                ("connects", series("connects")),
                ("turns", series("turnsSent")),
                ("errors", series("errors")),
            ],
            "seconds since start",
            "count",
            markers,
            x_range=span,
        )
    )
    cpu_series = [
        (f"client w{w}", [(p["t"], p["cpuPercent"]) for p in pts])
        for w, pts in report["client"]["workerTimeline"].items()
    ]
    for t in report["target"]:
        samples = t.get("samples", [])
        cpu_series.append(
            (
                f"target {t['pid']}",
                [(p["t"], p["cpuPercent"]) for p in samples if "cpuPercent" in p],
            )
        )
    parts.append(
        line_chart(
            "CPU % (100 = one core)",
            cpu_series,
            "seconds since start",
            "%",
            markers,
            x_range=span,
        )
    )
    rss = [
        (f"target {t['pid']}", [(p["t"], p["rssBytes"] / 2**20) for p in t.get("samples", [])])
        for t in report["target"]
    ]
    if rss:
        parts.append(
            line_chart("target RSS", rss, "seconds since start", "MiB", markers, x_range=span)
        )
    parts.append("<h2>Histograms</h2>")
    parts.append(histogram_chart("turn submit → spectator", hists["turnDelivery"]))
    parts.append(histogram_chart("turn submit → ack", hists["turnAck"]))
    parts.append(
        percentile_chart(
            "latency by percentile",
            [("turn → spectator", hists["turnDelivery"]), ("turn → ack", hists["turnAck"])],
        )
    )
    parts.append(histogram_chart("spectator connect → snapshot", hists["connectSpectator"]))
    parts.append("<h2>Client and target</h2>")
    parts.append(
        _table(
            [
                (w["worker"], w["cpuSeconds"], w["cpuPercentMeanPlay"], w["cpuPercentMax"])
                for w in report["client"]["workers"]
            ],
            ("client worker", "cpu s", "cpu % mean (play)", "cpu % max"),
        )
    )
    if report["target"]:
        parts.append(
            _table(
                [
                    (
                        t["pid"],
                        t.get("cpuPercentMean"),
                        t.get("cpuPercentMax"),
                        round(t.get("rssStartBytes", 0) / 2**20, 1),
                        round(t.get("rssMaxBytes", 0) / 2**20, 1),
                        round(t.get("rssEndBytes", 0) / 2**20, 1),
                        t.get("error", ""),
                    )
                    for t in report["target"]
                ],
                (
                    "target pid",
                    "cpu % mean",
                    "cpu % max",
                    "rss start MiB",
                    "rss max MiB",
                    "rss end MiB",
                    "",
                ),
            )
        )
    if report["serverMetrics"]:
        parts.append("<h2>Server /metrics deltas</h2>")
        parts.append(f"<pre>{_esc(json.dumps(report['serverMetrics'], indent=1))}</pre>")
    parts.append("<h2>Set-up</h2>")
    parts.append(f"<pre>{_esc(json.dumps(report['setup'], indent=1))}</pre>")
    if report["crashes"]:
        parts.append("<h2>Worker failures</h2>")
        parts.extend(f"<pre>{_esc(c)}</pre>" for c in report["crashes"])
    parts.append("</body></html>\n")
    return "".join(parts)
