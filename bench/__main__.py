"""``python -m bench``: run the benchmarks, write results.json and plots, print a table.

Starts its own Kafka and PostgreSQL with punchcard_devstack (or uses the ones named by
``PUNCHCARD_KAFKA_BOOTSTRAP_SERVERS`` and ``PUNCHCARD_DATABASE_URL``). Every figure is
reported next to an anchor measured in the same run on the same machine, as a ratio:
absolute numbers from different runs or machines are not comparable, ratios roughly are.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import uvloop
from punchcard_devstack import DevStack, Endpoints
from punchcard_platform.logging import configure_logging
from punchcard_platform.settings import Settings

from bench import console, expiry, ingest, plots, query, reservations, returns
from bench.common import Context, Sizes, machine, say

_BENCHMARKS: dict[str, Callable[[Context], Awaitable[dict[str, Any]]]] = {
    "ingest": ingest.run,
    "returns": returns.run,
    "coupon_query": query.run,
    "reservations": reservations.run,
    "console": console.run,
    "expiry": expiry.run,
}


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Punchcard benchmarks (results in bench-results/)."
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, a minute or two")
    parser.add_argument("--receipts", type=int, help="receipts to ingest (default 50,000)")
    parser.add_argument("--naive-receipts", type=int, help="receipts for the naive consumer")
    parser.add_argument(
        "--preload-receipts",
        type=int,
        help="also ingest into a receipts table preloaded with this many rows (e.g. 5000000)",
    )
    parser.add_argument("--customers", type=int, help="customers with coupon usage (1,000,000)")
    parser.add_argument("--rate", type=float, help="coupon-query offered load, req/s (400)")
    parser.add_argument("--query-seconds", type=float, help="coupon-query measured seconds (20)")
    parser.add_argument("--returns", type=int, help="returns for the throughput run (20,000)")
    parser.add_argument("--return-rate", type=float, help="returns/s in the latency run (200)")
    parser.add_argument(
        "--expiry-lots", type=int, help="points lots due at once for the expiry job (1,000,000)"
    )
    parser.add_argument(
        "--only",
        default=",".join(_BENCHMARKS),
        help=f"comma-separated subset of: {', '.join(_BENCHMARKS)}",
    )
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="output folder")
    return parser.parse_args(argv)


def _sizes(args: argparse.Namespace) -> Sizes:
    sizes = Sizes.quick() if args.quick else Sizes()
    overrides = {
        "receipts": args.receipts,
        "naive_receipts": args.naive_receipts,
        "preload_receipts": args.preload_receipts,
        "customers": args.customers,
        "query_rate": args.rate,
        "query_seconds": args.query_seconds,
        "returns": args.returns,
        "return_rate": args.return_rate,
        "expiry_lots": args.expiry_lots,
    }
    return replace(sizes, **{k: v for k, v in overrides.items() if v is not None})


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks; exit 1 if any of them failed."""
    args = _arguments(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in _BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    sizes = _sizes(args)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("coupon-query.log", "returns.log"):
        (out / stale).unlink(missing_ok=True)  # service logs append; keep this run's only
    configure_logging(Settings(log_level="WARNING", log_format="console"))
    began = time.perf_counter()
    say(f"bench: {'quick' if args.quick else 'full'} run of {', '.join(chosen)}; results in {out}/")
    stack = DevStack(log=lambda line: say(f"stack: {line}"))
    endpoints = stack.start()
    try:
        results = uvloop.run(
            _run(
                endpoints,
                stack=stack,
                out=out,
                sizes=sizes,
                chosen=chosen,
                quick=args.quick,
                began=began,
            )
        )
    finally:
        stack.stop()
    results["run"]["wall_seconds"] = round(time.perf_counter() - began, 1)
    _write(results, out)
    print()
    print(_table(results))
    print()
    say(f"bench: wall time {results['run']['wall_seconds']:.0f}s; {out / 'results.json'}")
    return 1 if any("error" in results.get(name, {}) for name in chosen) else 0


async def _run(
    endpoints: Endpoints,
    *,
    stack: DevStack,
    out: Path,
    sizes: Sizes,
    chosen: list[str],
    quick: bool,
    began: float,
) -> dict[str, Any]:
    ctx = Context(endpoints=endpoints, out=out, sizes=sizes)
    conn = await asyncpg.connect(endpoints.database_url)
    try:
        postgres = await conn.fetchval("SELECT version()")
        postgres_settings = {
            name: await conn.fetchval(f"SHOW {name}")
            for name in ("fsync", "synchronous_commit", "full_page_writes", "shared_buffers")
        }
    finally:
        await conn.close()
    results: dict[str, Any] = {
        "run": {
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "mode": "quick" if quick else "full",
            "tag": ctx.tag,
            "machine": machine(),
            "postgres": postgres,
            "postgres_settings": postgres_settings,
            "stack": "punchcard_devstack (started for this run)"
            if stack.kafka is not None
            else "PUNCHCARD_* environment",
            "stack_startup_seconds": round(stack.startup_seconds, 1),
            "sizes": sizes.as_dict(),
            "note": "compare ratios, not absolute figures across runs; everything (Kafka, "
            "PostgreSQL, the services and the load generators) shares this machine's cores. "
            "Consumers measured in-process log at WARNING; services run as processes log "
            "JSON at INFO to files in this folder.",
        }
    }
    for name in chosen:
        say(f"bench: --- {name} ---")
        started = time.perf_counter()
        try:
            results[name] = await _BENCHMARKS[name](ctx)
        except Exception as exc:
            traceback.print_exc()
            say(f"bench: {name} failed: {exc!r}")
            results[name] = {"error": repr(exc)}
        results[name]["benchmark_wall_seconds"] = round(time.perf_counter() - started, 1)
        results["run"]["wall_seconds"] = round(time.perf_counter() - began, 1)
        _write(results, out)
    return results


def _write(results: dict[str, Any], out: Path) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    try:
        results["run"]["plots"] = plots.write_all(results, out)
    except Exception as exc:
        say(f"bench: plotting failed: {exc!r}")
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")


def _fmt(value: Any, unit: str = "", digits: int = 0) -> str:
    if value is None:
        return "n/a"
    return f"{float(value):,.{digits}f}{unit}"


def _ratio(value: Any, suffix: str = "x") -> str:
    return "n/a" if value is None else f"{float(value):.3g}{suffix}"


def _table(results: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str, str]] = [
        ("measurement", "figure", "anchor (same run)", "ratio")
    ]
    ing = results.get("ingest", {})
    if "set_based" in ing:
        sb, raw, naive = ing["set_based"], ing["raw_consume"], ing["naive"]
        rows.append(
            (
                f"receipt ingest, set-based ({ing['receipts']:,})",
                _fmt(sb["receipts_per_second"], " rcpt/s"),
                f"raw consume {_fmt(raw['records_per_second'], ' rec/s')}",
                _ratio(ing["ratios"]["set_based_over_raw"]),
            )
        )
        rows.append(
            (
                "receipt ingest, set-based vs naive",
                _fmt(sb["receipts_per_second"], " rcpt/s"),
                f"naive {_fmt(naive['receipts_per_second'], ' rcpt/s', 1)} "
                f"({naive['receipts']:,} rec)",
                _ratio(ing["ratios"]["set_based_over_naive"]),
            )
        )
        if "end_to_end" in ing:
            e2e, ceiling = ing["end_to_end"], ing["postgres_ceiling"]
            rows.append(
                (
                    "receipt ingest, end to end (relay incl.)",
                    _fmt(e2e["receipts_per_second"], " rcpt/s"),
                    f"PostgreSQL ceiling {_fmt(ceiling['receipts_per_second'], ' rcpt/s')}",
                    _ratio(ing["ratios"]["end_to_end_over_postgres_ceiling"]),
                )
            )
            lifetime = ing.get("lifetime", {})
            if "end_to_end" in lifetime:
                rows.append(
                    (
                        f"  the same, points lifetime {lifetime['points_lifetime']}",
                        _fmt(lifetime["end_to_end"]["receipts_per_second"], " rcpt/s"),
                        "PostgreSQL ceiling "
                        f"{_fmt(lifetime['postgres_ceiling']['receipts_per_second'], ' rcpt/s')}",
                        _ratio(lifetime["ratios"]["end_to_end_over_postgres_ceiling"]),
                    )
                )
            campaign = ing.get("campaign_cap", {})
            if "end_to_end" in campaign:
                rows.append(
                    (
                        "  the same, campaign-capped coupon on 1/2 of sales",
                        _fmt(campaign["end_to_end"]["receipts_per_second"], " rcpt/s"),
                        "PostgreSQL ceiling "
                        f"{_fmt(campaign['postgres_ceiling']['receipts_per_second'], ' rcpt/s')}",
                        _ratio(campaign["ratios"]["end_to_end_over_postgres_ceiling"]),
                    )
                )
            rows.append(
                (
                    "outbox relay",
                    _fmt(ing["relay"]["events_per_second"], " ev/s"),
                    f"written e2e {_fmt(e2e['output_events_per_second'], ' ev/s')}",
                    _ratio(ing["ratios"]["relay_events_over_written_events_per_second"]),
                )
            )
        if "preloaded" in ing:
            pre = ing["preloaded"]
            rows.append(
                (
                    f"ingest on {pre['preloaded_receipts']:,} stored receipts",
                    _fmt(pre["receipts_per_second"], " rcpt/s"),
                    f"empty table {_fmt(sb['receipts_per_second'], ' rcpt/s')}",
                    _ratio(ing["ratios"]["preloaded_over_empty"]),
                )
            )
    elif "error" in ing:
        rows.append(("receipt ingest", "FAILED", ing["error"][:60], ""))
    cq = results.get("coupon_query", {})
    if "service" in cq:
        svc, pg = cq["service"], cq.get("pgbench", {})
        ceiling = pg.get("ceiling", {})
        at_rate = pg.get("at_offered_rate", {}).get("latency", {})
        lat = svc["latency"]
        rows.append(
            (
                f"coupon-query @ {svc['offered_rps']:g} req/s offered",
                _fmt(svc["achieved_rps"], " rps"),
                f"pgbench ceiling {_fmt(ceiling.get('tps'), ' tps')}",
                _ratio(cq["ratios"]["service_rps_over_pgbench_ceiling_tps"]),
            )
        )
        rows.append(
            (
                "coupon-query latency p50/p90/p99",
                f"{_fmt(lat['p50_ms'], '', 1)}/{_fmt(lat['p90_ms'], '', 1)}/"
                f"{_fmt(lat['p99_ms'], ' ms', 1)}",
                f"pgbench @ same rate {_fmt(at_rate.get('p50_ms'), '', 2)}/"
                f"{_fmt(at_rate.get('p90_ms'), '', 2)}/{_fmt(at_rate.get('p99_ms'), ' ms', 2)}",
                f"p50 {_ratio(cq['ratios']['service_p50_over_pgbench_p50_at_same_rate'])}, "
                f"p99 {_ratio(cq['ratios']['service_p99_over_pgbench_p99_at_same_rate'])}",
            )
        )
        if "sweep" in cq:
            rows.append(
                (
                    "coupon-query max rate with p99 <= 20 ms",
                    _fmt(cq["max_rps_at_p99_20ms"], " req/s"),
                    f"pgbench ceiling {_fmt(ceiling.get('tps'), ' tps')}",
                    _ratio(cq["ratios"]["max_rps_at_p99_20ms_over_pgbench_ceiling"]),
                )
            )
    elif "error" in cq:
        rows.append(("coupon-query", "FAILED", cq["error"][:60], ""))
    rows += _reservation_rows(results.get("reservations", {}))
    ret = results.get("returns", {})
    if "throughput" in ret:
        thr, lat = ret["throughput"], ret["latency"]
        rows.append(
            (
                f"returns applied ({thr['returns']:,})",
                _fmt(thr["returns_per_second"], " ret/s"),
                f"raw consume {_fmt(thr['raw_consume']['records_per_second'], ' rec/s')}",
                _ratio(ret["ratios"]["applied_over_raw_consume"]),
            )
        )
        if "postgres_ceiling" in ret:
            rows.append(
                (
                    "returns applied vs PostgreSQL ceiling",
                    _fmt(thr["returns_per_second"], " ret/s"),
                    f"ceiling {_fmt(ret['postgres_ceiling']['returns_per_second'], ' ret/s')}",
                    _ratio(ret["ratios"]["applied_over_postgres_ceiling"]),
                )
            )
        out, hop = lat["outcome_latency"], lat["broker_latency"]
        rows.append(
            (
                f"return -> outcome @ {lat['rate_per_second']:g}/s p50/p99",
                f"{_fmt(out['p50_ms'], '', 1)}/{_fmt(out['p99_ms'], ' ms', 1)}",
                f"broker hop {_fmt(hop['p50_ms'], '', 1)}/{_fmt(hop['p99_ms'], ' ms', 1)}",
                f"p50 {_ratio(ret['ratios']['outcome_p50_over_broker_p50'])}, "
                f"p99 {_ratio(ret['ratios']['outcome_p99_over_broker_p99'])}",
            )
        )
    elif "error" in ret:
        rows.append(("returns", "FAILED", ret["error"][:60], ""))
    rows += _console_rows(results.get("console", {}))
    rows += _expiry_rows(results.get("expiry", {}))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += _query_sweep_table(cq)
    m = results["run"]["machine"]
    lines.append("")
    lines.append(f"machine: {m['nproc']} cpu ({m['cpu_model']}), {m['memory_gib']} GiB")
    return "\n".join(lines)


def _reservation_rows(res: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """POST reservation calls: the highest rate within p99 20 ms, beside pgbench's ceiling."""
    if "error" in res:
        return [("reservations", "FAILED", res["error"][:60], "")]
    if "sweep" not in res:
        return []
    ceiling = res["pgbench"].get("ceiling", {})
    return [
        (
            "reservations max rate with p99 <= 20 ms",
            _fmt(res["max_rps_at_p99_20ms"], " req/s"),
            f"pgbench ceiling {_fmt(ceiling.get('tps'), ' tps')}",
            _ratio(res["ratios"]["max_rps_at_p99_20ms_over_pgbench_ceiling"]),
        )
    ]


def _console_rows(con: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """The console's pages (p95, one request at a time) and the hot route beside it."""
    if "error" in con:
        return [("console", "FAILED", con["error"][:60], "")]
    if "pages" not in con:
        return []
    pages, ratios = con["pages"], con["ratios"]
    rows = [
        (
            "console customer page p95",
            _fmt(pages["customer"]["p95_ms"], " ms", 1),
            f"its 3 API calls {_fmt(pages['customer_json_api_3_calls']['p95_ms'], ' ms', 1)}",
            _ratio(ratios["customer_page_p95_over_its_3_api_calls_p95"]),
        ),
        (
            "console receipt page p95",
            _fmt(pages["receipt"]["p95_ms"], " ms", 1),
            f"GET /v1/receipts {_fmt(pages['receipt_json_api']['p95_ms'], ' ms', 1)}",
            _ratio(ratios["receipt_page_p95_over_api_p95"]),
        ),
        (
            "console other pages p95 (list/coupon/DLQ)",
            "/".join(
                _fmt(pages[name]["p95_ms"], "", 1)
                for name in ("coupons_list", "coupon", "dead_letters")
            )
            + " ms",
            "",
            "",
        ),
    ]
    hot = con.get("hot_route", {})
    if "alone" in hot:
        rows.append(
            (
                "hot route p99 beside the console",
                _fmt(hot["beside_console"]["latency"]["p99_ms"], " ms", 1),
                f"alone {_fmt(hot['alone']['latency']['p99_ms'], ' ms', 1)}",
                _ratio(hot["ratios"]["p99_beside_over_alone"]),
            )
        )
    return rows


def _expiry_rows(exp: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """The expiry job against the same SQL replayed, and CPU per lot."""
    if "error" in exp:
        return [("expiry job", "FAILED", exp["error"][:60], "")]
    if "job" not in exp:
        return []
    job, ceiling = exp["job"], exp["postgres_ceiling"]
    job_cpu, ceiling_cpu = job["cpu_us_per_lot"], ceiling["cpu_us_per_lot"]
    return [
        (
            f"expiry job, {exp['lots_due']:,} lots due at once",
            _fmt(job["lots_per_second"], " lots/s"),
            f"PostgreSQL ceiling {_fmt(ceiling['lots_per_second'], ' lots/s')}",
            _ratio(exp["ratios"]["job_over_postgres_ceiling"]),
        ),
        (
            "expiry CPU per lot, job + PostgreSQL",
            f"{_fmt(job_cpu['job_process'], '', 1)} + {_fmt(job_cpu['postgresql'], ' us', 1)}",
            f"replay {_fmt(ceiling_cpu['bench_process'], '', 1)} + "
            f"{_fmt(ceiling_cpu['postgresql'], ' us', 1)}",
            _ratio(exp["ratios"]["job_cpu_over_ceiling_cpu"]),
        ),
    ]


def _query_sweep_table(cq: dict[str, Any]) -> list[str]:
    """The coupon-query sweep, one line per step."""
    sweep = cq.get("sweep")
    if not sweep:
        return []
    header = ("offered/s", "achieved/s", "p50 ms", "p99 ms", "svc CPU ms/req", "gen CPU ms/req")
    rows = [header]
    for step in sweep["steps"]:
        rows.append(
            (
                _fmt(step["offered_rps"]),
                _fmt(step["achieved_rps"]),
                _fmt(step["p50_ms"], "", 2),
                _fmt(step["p99_ms"], "", 2) + ("" if step["held"] else " (not held)"),
                _fmt(step["service_cpu_ms_per_request"], "", 3),
                _fmt(step["generator_cpu_ms_per_request"], "", 3),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    title = (
        f"coupon-query sweep ({sweep['workers']} workers; CPU per request: service "
        "processes, load generator)"
    )
    lines = ["", title]
    lines += ["  ".join(cell.rjust(widths[i]) for i, cell in enumerate(row)) for row in rows]
    return lines


if __name__ == "__main__":
    sys.exit(main())
