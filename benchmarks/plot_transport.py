"""Draw the figures of ``bench_transport.py --json PATH`` as one PNG.

Left: events/s against the number in flight, one line per client (the SDK's swept
``max_in_flight`` rows are left out: its line is its default). Middle: the client's CPU per
event. Right: the latency-bound run, as a share of its ceiling (in flight / latency).

Run ``python benchmarks/plot_transport.py results.json`` (``--out`` names the PNG,
``benchmarks/transport.png`` by default), or ``nox -s bench_plot`` for both steps.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import matplotlib as mpl

mpl.use("Agg")  # no display: before pyplot is imported

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.ticker import FuncFormatter, NullFormatter

DEFAULT_OUT: Final = Path(__file__).with_name("transport.png")
# Colour by what carries the bytes, line style by who drives it (raw dashed, SDK solid).
STYLES: Final[dict[str, dict[str, Any]]] = {
    "requests": {"color": "0.45", "linestyle": ":", "marker": "s"},
    "httpx": {"color": "tab:blue", "linestyle": "--", "marker": "o"},
    "aiohttp": {"color": "tab:orange", "linestyle": "--", "marker": "o"},
    "httpx-aiohttp": {"color": "tab:green", "linestyle": "--", "marker": "o"},
    "sdk": {"color": "tab:blue", "linestyle": "-", "marker": "D"},
    "sdk-aiohttp": {"color": "tab:orange", "linestyle": "-", "marker": "D"},
    "sdk-httpx-aiohttp": {"color": "tab:green", "linestyle": "-", "marker": "D"},
    "sdk-http2": {"color": "tab:purple", "linestyle": "-", "marker": "^"},  # --tls only
}
TARGET_PCT: Final = 90.0  # the latency run's target for the SDK on aiohttp


def main_rows(live: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The rows of each client's line, by concurrency: the SDK's default, not its sweep."""
    lines: dict[str, list[dict[str, Any]]] = {}
    for row in live:
        if row["client"] == "sdk" and row["max_in_flight"] is not None:
            continue
        lines.setdefault(row["client"], []).append(row)
    for rows in lines.values():
        rows.sort(key=lambda row: row["concurrency"])
    return lines


def thousands(value: float, _position: object) -> str:
    """Tick labels ``1,600`` on a log axis."""
    return f"{value:,.0f}"


def plot_lines(ax: Axes, report: dict[str, Any], field: str, ylabel: str, title: str) -> None:
    """One panel: ``field`` of each client's rows against the number in flight."""
    labels = report.get("client_labels", {})
    lines = main_rows(report["live"])
    for client, rows in lines.items():
        xs = [row["concurrency"] for row in rows]
        ys = [row[field] for row in rows]
        ax.plot(xs, ys, label=labels.get(client, client), **STYLES.get(client, {}))
        failed = [i for i, row in enumerate(rows) if not row["ok"]]
        if failed:  # a run that lost or failed events: a red cross over its point
            ax.scatter(
                [xs[i] for i in failed],
                [ys[i] for i in failed],
                marker="x",
                s=120,
                color="red",
                zorder=5,
            )
    concurrencies = sorted({row["concurrency"] for row in report["live"]})
    ax.set_xscale("log", base=2)
    ax.set_xticks(concurrencies, [str(n) for n in concurrencies])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(thousands))
    ax.yaxis.set_minor_formatter(FuncFormatter(minor_ticks))
    ax.set_xlabel("requests in flight (log2)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(visible=True, which="both", alpha=0.3)


def minor_ticks(value: float, _position: object) -> str:
    """Label the 2s and 5s of a log axis too, so short ranges still read."""
    leading = round(value / 10 ** int(f"{value:e}".split("e")[1]))
    return f"{value:,.0f}" if leading in (2, 5) else ""


def plot_latency_run(ax: Axes, report: dict[str, Any]) -> None:
    """Horizontal bars: each client's events/s as a share of the ceiling."""
    run = report.get("latency_run")
    if not run or not run["rows"]:
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no latency run", ha="center", va="center", transform=ax.transAxes)
        return
    labels = report.get("client_labels", {})
    rows = run["rows"]
    names = [labels.get(row["client"], row["client"]) for row in rows]
    pcts = [row["ceiling_pct"] for row in rows]
    colors = [STYLES.get(row["client"], {}).get("color", "0.5") for row in rows]
    hatches = ["" if row["client"].startswith("sdk") else "//" for row in rows]
    bars = ax.barh(names, pcts, color=colors, hatch=hatches, edgecolor="white")
    ax.invert_yaxis()
    for bar, row in zip(bars, rows, strict=True):
        note = f" {row['ceiling_pct']:.1f}% ({row['events_per_s']:,.0f}/s)"
        if not row["ok"]:
            note += " FAILED"
        ax.text(
            bar.get_width(),
            bar.get_y() + bar.get_height() / 2,
            note,
            va="center",
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1},
        )
    ax.axvline(100, color="black", linewidth=1, label="ceiling")
    if "targets" in report:  # none under --tls: the targets are judged on plain HTTP
        ax.axvline(
            TARGET_PCT, color="red", linestyle="--", linewidth=1, label="target (SDK aiohttp)"
        )
    ax.set_xlim(0, 135)
    ax.set_xlabel("% of ceiling")
    ax.set_title(
        f"Latency run: {run['in_flight']} in flight, {run['latency_s'] * 1000:g} ms per "
        f"request\nceiling {run['ceiling']:,.0f} events/s, {run['events']:,} events per client"
    )
    ax.legend(fontsize="small", loc="lower right")
    ax.grid(visible=True, axis="x", alpha=0.3)


def subtitle(report: dict[str, Any]) -> str:
    """What the figures were measured against, and how busy the machine was."""
    machine = report["machine"]
    rows = report["live"] + (report.get("latency_run") or {}).get("rows", [])
    others = max((row["other_cpu_pct"] for row in rows), default=0.0)
    server = max((row["server_cpu_pct"] for row in rows), default=0.0)
    events = report["live"][0]["events"] if report["live"] else 0
    start = ", ".join(f"{v:.2f}" for v in machine["loadavg_at_start"])
    end = ", ".join(f"{v:.2f}" for v in report.get("loadavg_at_end", []))
    # Figures written before --tls existed name only uvicorn's HTTP parser.
    kind = machine.get("server", f"uvicorn with {machine['server_http']}")
    return (
        f"fake Taapit API ({kind}) on 127.0.0.1, {events:,} events per "
        f"client and concurrency; fake server at most {server:.0f}% of a core; other processes "
        f"at most {others:.0f}% of a core; load average {start} at start, {end} at the end"
    )


def plot(report: dict[str, Any], out: Path) -> None:
    """Write the PNG."""
    machine = report["machine"]
    fig, axes = plt.subplots(
        1, 3, figsize=(20, 7.5), gridspec_kw={"width_ratios": [1.15, 1.0, 1.1]}
    )
    if report["live"]:
        plot_lines(axes[0], report, "events_per_s", "events/s (log)", "Throughput")
        plot_lines(
            axes[1],
            report,
            "client_cpu_us_per_event",
            "client CPU µs per event (log)",
            "Client CPU per event",
        )
        # One legend for both line panels, under them, clear of the lines.
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=4, bbox_to_anchor=(0.36, 0.0))
    else:
        for ax in axes[:2]:
            ax.set_axis_off()
    plot_latency_run(axes[2], report)
    fig.suptitle(
        f"taapit-async transports: {machine['cpu']}, {machine['cores']} cores, "
        f"{machine['python']}, {report.get('date', '')}",
        fontsize="x-large",
    )
    fig.text(0.5, 0.905, subtitle(report), ha="center", fontsize="small", color="0.3")
    fig.tight_layout(rect=(0, 0.12, 1, 0.9))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    """Read the JSON, write the PNG."""
    parser = argparse.ArgumentParser(description="Plot bench_transport.py --json figures.")
    parser.add_argument("results", type=Path, help="the JSON that --json wrote")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"the PNG ({DEFAULT_OUT})")
    args = parser.parse_args(argv)
    report = json.loads(args.results.read_text())
    plot(report, args.out)
    print(f"Plot written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
