"""PNG plots of one run's results (matplotlib, Agg: no display needed)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

_PERCENTILES = (("p50", "p50_ms"), ("p90", "p90_ms"), ("p99", "p99_ms"), ("p99.9", "p99_9_ms"))


def rate_over_time(
    timeline: list[list[float]] | list[tuple[float, int]],
) -> tuple[list[float], list[float]]:
    """Records per second in bins, from cumulative (seconds, applied) samples."""
    if len(timeline) < 2:
        return [], []
    span = float(timeline[-1][0])
    width = 1.0 if span >= 10 else max(span / 10, 0.1)
    bins = [0.0] * (int(span / width) + 1)
    previous = 0
    for t, applied in timeline:
        bins[min(int(float(t) / width), len(bins) - 1)] += int(applied) - previous
        previous = int(applied)
    return [i * width + width / 2 for i in range(len(bins))], [b / width for b in bins]


def write_all(results: dict[str, Any], out: Path) -> list[str]:
    """Every plot the results allow; returns the file names written."""
    written = []
    if "receipts_per_second" in results.get("ingest", {}).get("set_based", {}):
        written.append(_ingest(results["ingest"], out / "ingest.png"))
    if "service" in results.get("coupon_query", {}):
        written.append(_query(results["coupon_query"], out / "coupon_query_latency.png"))
    if "sweep" in results.get("coupon_query", {}):
        written.append(_query_sweep(results["coupon_query"], out / "coupon_query_sweep.png"))
    if "throughput" in results.get("returns", {}):
        written.append(_returns(results["returns"], out / "returns.png"))
    if "job" in results.get("expiry", {}):
        written.append(_expiry(results["expiry"], out / "expiry.png"))
    return written


def _ingest(ingest: dict[str, Any], path: Path) -> str:
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8), width_ratios=(2, 1))
    x, y = rate_over_time(ingest["set_based"]["timeline"])
    left.plot(x, y, marker=".", label="set-based consumer (receipts/s)")
    raw = ingest["raw_consume"]["records_per_second"]
    naive = ingest["naive"]["receipts_per_second"]
    average = ingest["set_based"]["receipts_per_second"]
    left.axhline(average, color="C0", linestyle=":", label=f"set-based average {average:,.0f}/s")
    left.axhline(naive, color="C3", linestyle="--", label=f"naive (1 per txn) {naive:,.0f}/s")
    ceiling = ingest.get("postgres_ceiling", {}).get("receipts_per_second")
    if ceiling:
        left.axhline(
            ceiling, color="C2", linestyle="-.", label=f"PostgreSQL ceiling {ceiling:,.0f}/s"
        )
    left.set_xlabel("seconds since the first record")
    left.set_ylabel("receipts applied per second")
    left.set_title(f"Receipt ingest rate over time ({ingest['receipts']:,} receipts)")
    left.set_ylim(bottom=0)
    left.legend(loc="lower right")
    left.grid(alpha=0.3)
    names = ["raw consume\n(ceiling)", "set-based", "naive"]
    values = [raw, average, naive]
    colors = ["C7", "C0", "C3"]
    if ceiling:
        names.insert(1, "PostgreSQL\nceiling")
        values.insert(1, ceiling)
        colors.insert(1, "C2")
    end_to_end = ingest.get("end_to_end", {}).get("receipts_per_second")
    if end_to_end:
        names.insert(-1, "end to end\n(relay incl.)")
        values.insert(-1, end_to_end)
        colors.insert(-1, "C1")
    bars = right.bar(names, values, color=colors)
    right.tick_params(axis="x", labelsize=8)
    right.set_yscale("log")
    right.set_ylabel("records per second (log)")
    right.set_title("Same records, each way of reading them")
    for bar, value in zip(bars, values, strict=True):
        right.annotate(
            f"{value:,.0f}", (bar.get_x() + bar.get_width() / 2, value), ha="center", va="bottom"
        )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _grouped_percentiles(ax: Any, series: list[tuple[str, dict[str, Any]]], title: str) -> None:
    width = 0.8 / max(len(series), 1)
    for i, (label, latency) in enumerate(series):
        values = [float(latency.get(key, math.nan)) for _, key in _PERCENTILES]
        positions = [p + (i - (len(series) - 1) / 2) * width for p in range(len(_PERCENTILES))]
        bars = ax.bar(positions, values, width, label=label)
        for bar, value in zip(bars, values, strict=True):
            if not math.isnan(value):
                ax.annotate(
                    f"{value:.1f}",
                    (bar.get_x() + bar.get_width() / 2, value),
                    ha="center",
                    va="bottom",
                    fontsize=8,
                )
    ax.set_xticks(range(len(_PERCENTILES)), [name for name, _ in _PERCENTILES])
    ax.set_yscale("log")
    bottom, top = ax.get_ylim()
    ax.set_ylim(bottom, top * 4)  # room for the legend above the tallest bar
    ax.set_ylabel("latency (ms, log)")
    ax.set_title(title)
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3, axis="y")


def _query(query: dict[str, Any], path: Path) -> str:
    fig, (ax, over_time) = plt.subplots(1, 2, figsize=(14, 5), width_ratios=(3, 2))
    service = query["service"]
    series = [(f"coupon-query @ {service['offered_rps']:g} req/s offered", service["latency"])]
    pgbench = query.get("pgbench", {})
    if "at_offered_rate" in pgbench:
        series.append(
            (
                f"pgbench same SQL @ {service['offered_rps']:g}/s",
                pgbench["at_offered_rate"]["latency"],
            )
        )
    if "ceiling" in pgbench:
        series.append(
            (
                f"pgbench flat out ({pgbench['ceiling']['tps']:,.0f} tps)",
                pgbench["ceiling"]["latency"],
            )
        )
    _grouped_percentiles(
        ax,
        series,
        f"GET /v1/customers/{{id}}/coupons, {query['customers']:,} customers: "
        f"{service['achieved_rps']:,.0f} rps achieved",
    )
    rows = service.get("latency_per_second", [])
    for key, label in (("p50_ms", "p50"), ("p99_ms", "p99"), ("max_ms", "max")):
        over_time.plot([r["second"] for r in rows], [r[key] for r in rows], marker=".", label=label)
    over_time.set_yscale("log")
    over_time.set_xlabel("second of the measured window")
    over_time.set_ylabel("coupon-query latency (ms, log)")
    over_time.set_title("Service latency per second")
    over_time.legend()
    over_time.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _query_sweep(query: dict[str, Any], path: Path) -> str:
    sweep = query["sweep"]
    steps = sweep["steps"]
    fig, (lat, cpu) = plt.subplots(1, 2, figsize=(13, 4.8))
    offered = [s["offered_rps"] for s in steps]
    for key, label in (("p50_ms", "p50"), ("p99_ms", "p99")):
        lat.plot(offered, [s[key] for s in steps], marker="o", label=label)
    held = [s for s in steps if s["held"]]
    lat.scatter(
        [s["offered_rps"] for s in steps if not s["held"]],
        [s["p99_ms"] for s in steps if not s["held"]],
        color="red",
        zorder=3,
        label="step not held",
    )
    lat.axhline(sweep["p99_limit_ms"], color="grey", linestyle="--", label="p99 limit")
    lat.set_xscale("log")
    lat.set_yscale("log")
    lat.set_xlabel("offered load (req/s, log)")
    lat.set_ylabel("latency from scheduled send (ms, log)")
    ceiling = query.get("pgbench", {}).get("ceiling", {}).get("tps")
    title = f"coupon-query sweep: {query['max_rps_at_p99_20ms']:,.0f} req/s held"
    if ceiling:
        title += f" (pgbench ceiling {ceiling:,.0f} tps)"
    lat.set_title(title)
    lat.legend()
    lat.grid(alpha=0.3)
    cpu.plot(
        offered,
        [s["service_cpu_ms_per_request"] for s in steps],
        marker="o",
        label=f"coupon-query ({sweep['workers']} workers)",
    )
    cpu.plot(
        offered,
        [s["generator_cpu_ms_per_request"] for s in steps],
        marker="o",
        label="load generator",
    )
    cpu.set_xscale("log")
    cpu.set_xlabel("offered load (req/s, log)")
    cpu.set_ylabel("CPU ms per request")
    cpu.set_ylim(bottom=0)
    cpu.set_title(f"CPU per request ({len(held)} of {len(steps)} steps held)")
    cpu.legend()
    cpu.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _returns(returns: dict[str, Any], path: Path) -> str:
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    throughput = returns["throughput"]
    timeline = throughput["timeline"]
    left.step(
        [t for t, _ in timeline],
        [n for _, n in timeline],
        where="post",
        marker=".",
        label="returns applied (each step: one transaction)",
    )
    average = throughput["returns_per_second"]
    end = float(timeline[-1][0]) if timeline else 0.0
    left.plot(
        [0, end], [0, average * end], color="C0", linestyle=":", label=f"average {average:,.0f}/s"
    )
    left.set_xlabel("seconds since the first return")
    left.set_ylabel("returns applied (cumulative)")
    left.set_title(
        f"Returns applied ({throughput['returns']:,}; raw consume "
        f"{throughput['raw_consume']['records_per_second']:,.0f}/s)"
    )
    left.set_ylim(bottom=0)
    left.legend(loc="lower right")
    left.grid(alpha=0.3)
    latency = returns["latency"]
    _grouped_percentiles(
        right,
        [
            ("publish -> outcome on return-outcomes", latency["outcome_latency"]),
            ("publish -> return fetched raw (broker)", latency["broker_latency"]),
        ],
        f"Return latency at {latency['rate_per_second']:g}/s",
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _expiry(expiry: dict[str, Any], path: Path) -> str:
    """Lots expired over time against the ceiling's pace, and where the ceiling's time goes."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    job, ceiling = expiry["job"], expiry["postgres_ceiling"]
    timeline = job["timeline"]
    left.plot([t for t, _ in timeline], [n for _, n in timeline], marker=".", label="lots expired")
    end = float(timeline[-1][0]) if timeline else 0.0
    for rate, style, label in (
        (job["lots_per_second"], ":", "job average"),
        (ceiling["lots_per_second"], "-.", "PostgreSQL ceiling"),
    ):
        left.plot([0, end], [0, rate * end], linestyle=style, label=f"{label} {rate:,.0f} lots/s")
    left.set_xlabel("seconds since the job started")
    left.set_ylabel("lots expired (cumulative)")
    left.set_title(f"Expiry job, {expiry['lots_due']:,} lots due at once")
    left.set_ylim(bottom=0)
    left.legend(loc="lower right")
    left.grid(alpha=0.3)
    statements = list(ceiling["seconds_by_statement"].items())[:6]
    right.barh(
        [label.split(" ... ")[0].rstrip(",") for label, _ in statements][::-1],
        [item["seconds"] for _, item in statements][::-1],
    )
    right.set_xlabel("seconds in the replayed ceiling")
    right.set_title(f"The ceiling's {ceiling['seconds']:,.0f} s by statement")
    right.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name
