#!/usr/bin/env python3
"""Plots fan-out latency against offered load from a scripts/bench.sh results directory, as SVG.

scripts/bench.sh leaves target/bench/<date>/ with one <name>.jsonl per scenario run name (one
loadgen JSON summary per line, one line per run) and calls this script on that directory once
every scenario is done:

    python3 scripts/plot.py "$OUT"

Usage:

    python3 scripts/plot.py RESULTS_DIR [--out DIR]   # DIR defaults to RESULTS_DIR
    python3 scripts/plot.py --self-test               # renders synthetic results and checks them

It writes, for each group that has results:

    latency-1room.svg     room-r<RATE> and peer-room-r<RATE>: 1,000 receivers in one room
    latency-100rooms.svg  rooms-r<RATE> and peer-rooms-r<RATE>: 10,000 receivers in 100 rooms
    latency-cross.svg     cross-<server>-r<RATE>: publisher on node A, receivers on node B

and prints the path of each file it writes. x is the offered load in deliveries/s (rate times
the receivers of one room), y is latency in ms on a log scale: a solid p99 line and a dashed p50
line per server, with the 50 ms p99 budget drawn across. Every point is the median over the runs
of a name, as in summary.md. Other runs (idle, persist, nodes) are not plotted.

Standard library only, so it runs wherever bench.sh does.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree
from xml.sax.saxutils import escape, quoteattr

P99_BUDGET_MS = 50.0

WIDTH, HEIGHT = 720, 420
# The legend sits right of the plot so that it never hides a point.
PLOT_LEFT, PLOT_RIGHT, PLOT_TOP, PLOT_BOTTOM = 70, 545, 58, 360

SERVER_LABELS = {"switchboard": "Switchboard", "socketio": "Socket.IO"}
# Blue and orange stay apart for the common colour-vision deficiencies; red is kept for loss.
SERVER_COLOURS = {"switchboard": "#1f77b4", "socketio": "#ff7f0e"}
LOSS_COLOUR = "#d62728"
SERVER_ORDER = ("switchboard", "socketio")
PERCENTILES = ("p99", "p50")


@dataclass(frozen=True)
class Group:
    """One output file: the run names it takes, and how it is titled."""

    slug: str
    title: str
    # Matches a run name; the "server" group, when present, names the server.
    name_pattern: re.Pattern[str]


GROUPS = (
    Group("1room", "1 room", re.compile(r"(?P<peer>peer-)?room-r\d+")),
    Group("100rooms", "100 rooms", re.compile(r"(?P<peer>peer-)?rooms-r\d+")),
    Group("cross", "cross-node over Redis", re.compile(r"cross-(?P<server>switchboard|socketio)-r\d+")),
)


@dataclass
class Point:
    """The medians over the runs of one run name."""

    name: str
    runs: int
    offered: float
    p50: float
    p99: float
    loss: float
    noisy_runs: int
    receivers: float
    rooms: float


@dataclass
class Chart:
    group: Group
    # Server -> its points, sorted by offered load.
    series: dict[str, list[Point]] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Reading results


def read_runs(path: Path) -> list[dict]:
    """The JSON summaries of a .jsonl file; like `loadgen median`, lines not starting with '{'
    are skipped, since a failed run leaves its error text there instead."""
    runs = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.startswith("{"):
            continue
        try:
            runs.append(json.loads(line))
        except json.JSONDecodeError as error:
            warn(f"{path}:{number}: skipped, not JSON: {error}")
    return runs


def server_of(name: str, match: re.Match[str], runs: list[dict]) -> str:
    """The server a run name measured: loadgen's dialect when recorded, else the name's."""
    dialects = {run.get("dialect") for run in runs} & set(SERVER_LABELS)
    if len(dialects) == 1:
        return dialects.pop()
    if dialects:
        warn(f"{name}: runs disagree on dialect {sorted(dialects)}; going by the name")
    server = match.groupdict().get("server")
    if server:
        return server
    return "socketio" if match.groupdict().get("peer") else "switchboard"


def offered_deliveries_per_sec(run: dict) -> float:
    """Deliveries/s the publishers asked for: every message reaches the receivers of one room."""
    return run["rate"] * run["receivers"] / max(run["rooms"], 1)


def summarise(name: str, runs: list[dict]) -> Point | None:
    """The median point of a run name, or None when no run has the fields to plot."""
    usable = []
    for run in runs:
        try:
            usable.append(
                {
                    "offered": float(offered_deliveries_per_sec(run)),
                    "p50": float(run["latency_ms"]["p50"]),
                    "p99": float(run["latency_ms"]["p99"]),
                    "loss": float(run["loss"]),
                    "receivers": float(run["receivers"]),
                    "rooms": float(run["rooms"]),
                }
            )
        except (KeyError, TypeError, ValueError) as error:
            warn(f"{name}: a run without a usable {error} was skipped")
    if not usable:
        return None
    medians = {key: statistics.median(run[key] for run in usable) for key in usable[0]}
    return Point(
        name=name,
        runs=len(usable),
        noisy_runs=sum(1 for run in runs if run.get("noisy") is True),
        **medians,
    )


def collect_charts(results_dir: Path) -> list[Chart]:
    """The charts that have at least one point, in GROUPS order."""
    charts = {group.slug: Chart(group) for group in GROUPS}
    for path in sorted(results_dir.glob("*.jsonl")):
        name = path.stem
        for group in GROUPS:
            match = group.name_pattern.fullmatch(name)
            if not match:
                continue
            runs = read_runs(path)
            point = summarise(name, runs)
            if point is not None:
                server = server_of(name, match, runs)
                charts[group.slug].series.setdefault(server, []).append(point)
            break
    for chart in charts.values():
        for points in chart.series.values():
            points.sort(key=lambda point: point.offered)
    return [chart for chart in charts.values() if chart.series]


# ---------------------------------------------------------------------------------------------
# Axes


def thousands(value: float) -> str:
    """100000 -> "100,000"; fractions keep only the digits they need (0.5, 2.5)."""
    if value == int(value):
        return f"{int(value):,}"
    return f"{value:,.2f}".rstrip("0").rstrip(".")


def linear_ticks(top: float) -> list[float]:
    """Ticks from 0 with the finest 1-2-5 step that needs at most eight intervals to reach
    `top`: dense enough to read a value off, sparse enough for "600,000" labels not to touch."""
    if top <= 0:
        return [0.0, 1.0]
    magnitude = 10 ** math.floor(math.log10(top / 8))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if top / (m * magnitude) <= 8)
    count = math.ceil(top / step - 1e-9)
    return [step * i for i in range(count + 1)]


def log_ticks(low: float, high: float) -> list[float]:
    """1-2-5 ticks spanning [low, high]: the first at or below low, the last at or above high."""
    high = max(high, low * 1.01)  # at least two ticks, or the axis has no scale
    exponent = math.floor(math.log10(low))
    candidates: list[float] = []
    while not candidates or candidates[-1] < high:
        # Formatting rounds away float noise (0.30000000000000004) in labels and comparisons.
        candidates += [float(f"{m * 10.0 ** exponent:.6g}") for m in (1, 2, 5)]
        exponent += 1
    first = max(i for i, tick in enumerate(candidates) if tick <= low)
    last = min(i for i, tick in enumerate(candidates) if tick >= high)
    return candidates[first : last + 1]


@dataclass
class Axes:
    x_ticks: list[float]
    y_ticks: list[float]

    def x(self, value: float) -> float:
        span = self.x_ticks[-1] - self.x_ticks[0]
        return PLOT_LEFT + (value - self.x_ticks[0]) / span * (PLOT_RIGHT - PLOT_LEFT)

    def y(self, value: float) -> float:
        low, high = math.log10(self.y_ticks[0]), math.log10(self.y_ticks[-1])
        # A latency of 0 (no delivery measured) cannot sit on a log axis: pin it to the floor.
        fraction = (math.log10(max(value, self.y_ticks[0])) - low) / (high - low)
        return PLOT_BOTTOM - fraction * (PLOT_BOTTOM - PLOT_TOP)


def axes_for(chart: Chart) -> Axes:
    points = [point for points in chart.series.values() for point in points]
    latencies = [getattr(point, p) for point in points for p in PERCENTILES]
    # The budget line is always in view, so that every chart answers "within budget?".
    latencies = [value for value in latencies if value > 0] + [P99_BUDGET_MS]
    return Axes(
        x_ticks=linear_ticks(max(point.offered for point in points) * 1.05),
        y_ticks=log_ticks(min(latencies), max(latencies)),
    )


# ---------------------------------------------------------------------------------------------
# SVG


def svg_text(x: float, y: float, text: str, **attributes: str) -> str:
    extra = "".join(f" {key.replace('_', '-')}={quoteattr(value)}" for key, value in attributes.items())
    return f'<text x="{x:.1f}" y="{y:.1f}"{extra}>{escape(text)}</text>'


def title_of(chart: Chart) -> tuple[str, str]:
    points = [point for points in chart.series.values() for point in points]
    receivers = statistics.median(point.receivers for point in points)
    runs = sorted({point.runs for point in points})
    run_text = " or ".join(str(n) for n in runs)
    return (
        f"Fan-out latency vs offered load: {chart.group.title}, {thousands(receivers)} receivers",
        f"median of {run_text} runs per point",
    )


def grid_and_ticks(axes: Axes) -> list[str]:
    parts = ['<g stroke="#e5e5e5" stroke-width="1">']
    for tick in axes.x_ticks:
        parts.append(f'<line x1="{axes.x(tick):.1f}" y1="{PLOT_TOP}" x2="{axes.x(tick):.1f}" y2="{PLOT_BOTTOM}"/>')
    for tick in axes.y_ticks:
        parts.append(f'<line x1="{PLOT_LEFT}" y1="{axes.y(tick):.1f}" x2="{PLOT_RIGHT}" y2="{axes.y(tick):.1f}"/>')
    parts.append("</g>")
    parts.append(
        f'<rect x="{PLOT_LEFT}" y="{PLOT_TOP}" width="{PLOT_RIGHT - PLOT_LEFT}" '
        f'height="{PLOT_BOTTOM - PLOT_TOP}" fill="none" stroke="#999"/>'
    )
    parts.append('<g font-size="11" fill="#333">')
    for tick in axes.x_ticks:
        parts.append(svg_text(axes.x(tick), PLOT_BOTTOM + 16, thousands(tick), text_anchor="middle"))
    for tick in axes.y_ticks:
        parts.append(svg_text(PLOT_LEFT - 6, axes.y(tick) + 4, thousands(tick), text_anchor="end"))
    parts.append("</g>")
    centre_x = (PLOT_LEFT + PLOT_RIGHT) / 2
    centre_y = (PLOT_TOP + PLOT_BOTTOM) / 2
    parts.append(
        svg_text(centre_x, PLOT_BOTTOM + 38, "offered load (deliveries/s)", text_anchor="middle", font_size="12")
    )
    parts.append(
        svg_text(
            18, centre_y, "latency (ms, log scale)", text_anchor="middle", font_size="12",
            transform=f"rotate(-90 18 {centre_y:.1f})",
        )
    )
    return parts


def budget_line(axes: Axes) -> list[str]:
    y = axes.y(P99_BUDGET_MS)
    return [
        f'<line x1="{PLOT_LEFT}" y1="{y:.1f}" x2="{PLOT_RIGHT}" y2="{y:.1f}" '
        f'stroke="{LOSS_COLOUR}" stroke-width="1" stroke-dasharray="2 3"/>',
        svg_text(PLOT_RIGHT - 4, y - 4, f"p99 budget {P99_BUDGET_MS:g} ms", text_anchor="end",
                 font_size="11", fill=LOSS_COLOUR),
    ]


def point_tooltip(server: str, point: Point) -> str:
    noisy = f", {point.noisy_runs} noisy" if point.noisy_runs else ""
    return (
        f"{point.name} ({SERVER_LABELS[server]}): {thousands(round(point.offered))} deliveries/s offered, "
        f"p50 {thousands(point.p50)} ms, p99 {thousands(point.p99)} ms, loss {thousands(point.loss)}; "
        f"{point.runs} runs{noisy}"
    )


def series_parts(axes: Axes, server: str, percentile: str, points: list[Point]) -> list[str]:
    """One polyline for the series, then its markers; lossy points get a hollow red ring so that
    a low latency bought by dropping messages does not pass for a good one."""
    colour = SERVER_COLOURS[server]
    dash = ' stroke-dasharray="6 4"' if percentile == "p50" else ""
    coordinates = " ".join(f"{axes.x(p.offered):.1f},{axes.y(getattr(p, percentile)):.1f}" for p in points)
    label = f"{SERVER_LABELS[server]} {percentile}"
    parts = [
        f'<polyline class="series" data-series={quoteattr(label)} points="{coordinates}" '
        f'fill="none" stroke="{colour}" stroke-width="2"{dash}/>'
    ]
    for point in points:
        cx, cy = axes.x(point.offered), axes.y(getattr(point, percentile))
        tooltip = f"<title>{escape(point_tooltip(server, point))}</title>"
        if point.loss > 0:
            parts.append(
                f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="5" fill="#fff" stroke="{LOSS_COLOUR}" '
                f'stroke-width="2">{tooltip}</circle>'
            )
        else:
            radius = 3.5 if percentile == "p99" else 2.5
            parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{radius}" fill="{colour}">{tooltip}</circle>')
    return parts


def legend(chart: Chart) -> list[str]:
    x, y = PLOT_RIGHT + 16, PLOT_TOP + 6
    parts = ['<g font-size="12" fill="#222">']
    for server in servers_in_order(chart):
        for percentile in PERCENTILES:
            dash = ' stroke-dasharray="6 4"' if percentile == "p50" else ""
            parts.append(
                f'<line x1="{x}" y1="{y}" x2="{x + 26}" y2="{y}" stroke="{SERVER_COLOURS[server]}" '
                f'stroke-width="2"{dash}/>'
            )
            parts.append(svg_text(x + 32, y + 4, f"{SERVER_LABELS[server]} {percentile}"))
            y += 20
    if any(point.loss > 0 for points in chart.series.values() for point in points):
        parts.append(
            f'<circle cx="{x + 13}" cy="{y}" r="5" fill="#fff" stroke="{LOSS_COLOUR}" stroke-width="2"/>'
        )
        parts.append(svg_text(x + 32, y + 4, "loss > 0"))
        y += 20
    noisy = sum(point.noisy_runs for points in chart.series.values() for point in points)
    if noisy:
        # bench.sh keeps a noisy run once its retries are spent; say so rather than hide it.
        parts.append(svg_text(x, y + 8, f"{noisy} run{'s' if noisy > 1 else ''} flagged noisy",
                              font_size="11", fill="#666"))
    parts.append("</g>")
    return parts


def servers_in_order(chart: Chart) -> list[str]:
    return [server for server in SERVER_ORDER if server in chart.series]


def render(chart: Chart) -> str:
    axes = axes_for(chart)
    title, subtitle = title_of(chart)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="Helvetica, Arial, sans-serif">',
        f"<title>{escape(title)}</title>",
        # Opaque, or GitHub's dark theme shows dark text on a dark page.
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#fff"/>',
        svg_text(PLOT_LEFT, 24, title, font_size="15", font_weight="bold", fill="#111"),
        svg_text(PLOT_LEFT, 42, subtitle, font_size="12", fill="#555"),
    ]
    parts += grid_and_ticks(axes)
    parts += budget_line(axes)
    for server in servers_in_order(chart):
        for percentile in reversed(PERCENTILES):  # p99 last, drawn on top
            parts += series_parts(axes, server, percentile, chart.series[server])
    parts += legend(chart)
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def write_charts(results_dir: Path, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for chart in collect_charts(results_dir):
        path = out_dir / f"latency-{chart.group.slug}.svg"
        path.write_text(render(chart))
        written.append(path)
    return written


def warn(message: str) -> None:
    print(f"plot.py: {message}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# Self-test


def synthetic_run(dialect: str, rate: int, receivers: int, rooms: int, p50: float, p99: float,
                  loss: int = 0, noisy: bool = False) -> dict:
    """A run with the fan-out summary's field names (crates/loadgen/src/fanout.rs)."""
    return {
        "scenario": "fanout",
        "dialect": dialect,
        "receivers": receivers,
        "rooms": rooms,
        "rate": rate,
        "loss": loss,
        "deliveries_per_sec": rate * receivers / rooms,
        "latency_ms": {"p50": p50, "p99": p99, "p999": p99 * 1.5, "max": p99 * 3},
        "noisy": noisy,
    }


def write_synthetic_results(directory: Path) -> None:
    def jsonl(name: str, runs: list[dict]) -> None:
        # A failed run's error line, as bench.sh would leave it, must be skipped.
        lines = [json.dumps(run) for run in runs] + ["Error: connection refused"]
        (directory / f"{name}.jsonl").write_text("\n".join(lines) + "\n")

    for rate, p99 in ((25, 2.1), (100, 3.4), (400, 9.0), (600, 40.0)):
        jsonl(f"room-r{rate}", [synthetic_run("switchboard", rate, 1000, 1, p99 / 2, p99 * f) for f in (0.9, 1, 1.2)])
    for rate, p99, loss in ((25, 4.0, 0), (100, 30.0, 0), (400, 700.0, 12), (600, 1200.0, 5000)):
        jsonl(f"peer-room-r{rate}",
              [synthetic_run("socketio", rate, 1000, 1, p99 / 3, p99, loss, noisy=(rate == 600)) for _ in range(3)])
    for rate in (500, 1000, 2000):
        jsonl(f"rooms-r{rate}", [synthetic_run("switchboard", rate, 10000, 100, 1.5, rate / 100)] * 3)
        jsonl(f"peer-rooms-r{rate}", [synthetic_run("socketio", rate, 10000, 100, 3.0, rate / 20)] * 3)
    for rate in (50, 200):
        for dialect in ("switchboard", "socketio"):
            jsonl(f"cross-{dialect}-r{rate}", [synthetic_run(dialect, rate, 100, 1, 1.0, 4.0)] * 3)
    # Runs that must not be plotted.
    jsonl("nodes1-switchboard-r100", [synthetic_run("switchboard", 100, 1000, 1, 1.0, 2.0)])
    (directory / "idle-rb512.jsonl").write_text('{"scenario":"idle","gateway_kib_per_conn":3.1}\n')
    (directory / "persist-b256.jsonl").write_text('{"scenario":"persist","persisted_per_sec":9000}\n')


def check(condition: bool, message: str, failures: list[str]) -> None:
    if not condition:
        failures.append(message)


def self_test() -> int:
    failures: list[str] = []
    check(thousands(100000) == "100,000", f"thousands(100000) = {thousands(100000)}", failures)
    check(log_ticks(2.1, 1200) == [2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000],
          f"log_ticks(2.1, 1200) = {log_ticks(2.1, 1200)}", failures)
    check(linear_ticks(630000)[-1] >= 630000, f"linear_ticks(630000) = {linear_ticks(630000)}", failures)

    expected_series = {
        "latency-1room.svg": {"Switchboard p99", "Switchboard p50", "Socket.IO p99", "Socket.IO p50"},
        "latency-100rooms.svg": {"Switchboard p99", "Switchboard p50", "Socket.IO p99", "Socket.IO p50"},
        "latency-cross.svg": {"Switchboard p99", "Switchboard p50", "Socket.IO p99", "Socket.IO p50"},
    }
    with tempfile.TemporaryDirectory(prefix="plot-self-test-") as temp:
        results = Path(temp)
        write_synthetic_results(results)
        written = write_charts(results, results / "svg")
        names = sorted(path.name for path in written)
        check(names == sorted(expected_series), f"wrote {names}, expected {sorted(expected_series)}", failures)
        for path in written:
            try:
                root = ElementTree.parse(path).getroot()
            except ElementTree.ParseError as error:
                failures.append(f"{path.name}: not valid XML: {error}")
                continue
            svg = "{http://www.w3.org/2000/svg}"
            check(root.tag == f"{svg}svg", f"{path.name}: root is {root.tag}", failures)
            labels = [line.get("data-series") for line in root.iter(f"{svg}polyline")]
            check(len(labels) == len(set(labels)) and set(labels) == expected_series.get(path.name),
                  f"{path.name}: series {labels}", failures)
            text = " ".join("".join(element.itertext()) for element in root.iter(f"{svg}text"))
            check("p99 budget 50 ms" in text, f"{path.name}: no budget label", failures)
            check("100,000" in text or path.name != "latency-1room.svg",
                  f"{path.name}: no thousands-separated tick", failures)
            check(("loss > 0" in text) == (path.name == "latency-1room.svg"),
                  f"{path.name}: loss legend wrong", failures)
        room = next(chart for chart in collect_charts(results) if chart.group.slug == "1room")
        # Median of 0.9x, 1x, 1.2x the nominal p99 is the nominal one.
        check(room.series["switchboard"][0].p99 == 2.1, "median p99 of room-r25 is not 2.1", failures)
        check(room.series["switchboard"][-1].offered == 600000, "offered load of room-r600 is not 600,000",
              failures)
        rooms = next(chart for chart in collect_charts(results) if chart.group.slug == "100rooms")
        check(rooms.series["socketio"][0].offered == 50000, "offered load of peer-rooms-r500 is not 50,000",
              failures)
    for failure in failures:
        print(f"self-test FAILED: {failure}", file=sys.stderr)
    if not failures:
        print(f"self-test ok: {len(expected_series)} charts")
    return 1 if failures else 0


# ---------------------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_dir", nargs="?", type=Path, help="a target/bench/<date>/ directory")
    parser.add_argument("--out", type=Path, help="where to write the SVGs (default: RESULTS_DIR)")
    parser.add_argument("--self-test", action="store_true", help="render synthetic results and check them")
    args = parser.parse_args(argv)
    if args.self_test:
        return self_test()
    if args.results_dir is None:
        parser.error("RESULTS_DIR is required")
    if not args.results_dir.is_dir():
        parser.error(f"{args.results_dir} is not a directory")
    written = write_charts(args.results_dir, args.out or args.results_dir)
    if not written:
        # Not an error: BENCH_ONLY=idle, say, leaves nothing to plot.
        warn(f"no fan-out results to plot in {args.results_dir}")
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
