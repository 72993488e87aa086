"""`python -m bench.run`: every measurement of issue 11 in one run (./scripts/bench.sh runs it).

Writes bench/results/<YYYY-MM-DD>.json and prints a table. Benchmarks never fail on speed;
the exit status is non-zero only when a measurement could not run or a count check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import ROOT, UVICORN_ARGS, Processes, machine_idle
from bench.context import Options, Run, log
from bench.ingest import measure_ceiling
from bench.store import bench_cluster

RESULTS = ROOT / "bench" / "results"
PARTS = (
    "roundtrips",
    "ingest",
    "supabase",
    "e2e",
    "capacity",
    "drain",
    "send",
    "memory",
    "driver",
)


# --- the parts ---------------------------------------------------------------------------------


def part_roundtrips(run: Run) -> dict[str, Any]:
    from bench.common import service_env
    from bench.roundtrips import count_round_trips

    store = run.database("roundtrips")
    run.cluster.set(store, "log_min_duration_statement", "0")
    env = service_env(database_url=None, emulator_url=None, worker_enabled=False)
    emulator = run.processes.uvicorn("emulator-rt", "bench.emulator_server:create_app", env=env)
    try:
        assert emulator.url is not None
        result = asyncio.run(count_round_trips(store, emulator.url, run.cluster.log_file))
    finally:
        run.processes.stop(emulator)
        run.cluster.drop(store)
    return result


def part_ceiling(run: Run, results: dict[str, Any], tag: str) -> None:
    if "ceiling" in results:
        return
    log(f"ceiling: bare FastAPI, {run.options.connections} connections, {run.options.duration:g} s")
    results["ceiling"] = measure_ceiling(run, "c" + tag)
    ceiling = results["ceiling"]
    results["generator"] = {
        "tool": "wrk (C, 1 thread, Lua script over pre-built requests)",
        "against_ceiling_rps": ceiling["requests_per_s"],
        "wrk_cpu_share_at_ceiling": round(ceiling["cpu_seconds"]["wrk"] / ceiling["duration_s"], 2),
        "note": "wrk reaches the ceiling's rate with part of one core; every service run is "
        "far below it, so the generator is not what limits the service.",
    }


def part_ingest(run: Run, results: dict[str, Any], tag: str) -> None:
    from bench.ingest import measure_ingest, measure_ingest_worker_on

    part_ceiling(run, results, tag)
    log("ingest: the service on the embedded PostgreSQL, worker off")
    store = run.database("ingest")
    results["ingest_embedded"] = measure_ingest(run, store, "e" + tag, label="embedded")
    run.cluster.drop(store)
    log("ingest: the service on the embedded PostgreSQL, worker on")
    results["ingest_worker_on"] = measure_ingest_worker_on(run, "w" + tag)


def part_supabase(run: Run, results: dict[str, Any], tag: str) -> None:
    from bench.ingest import measure_ingest
    from bench.stack import private_supabase
    from bench.store import StoreRef

    part_ceiling(run, results, tag)
    log("local Supabase: a private stack for this run")
    with private_supabase() as supabase:
        store = StoreRef(supabase["DATABASE_URL"], kind="supabase")
        log("ingest: the service on the local Supabase stack's database (DATABASE_URL)")
        pid = supabase.get("BENCH_POSTMASTER_PID")
        result = measure_ingest(
            run, store, "p" + tag, label="supabase", postmaster=int(pid) if pid else None
        )
        result["database_url"] = "the stack's PostgreSQL, direct (no pooler)"
        results["ingest_supabase"] = result


def wait_for_quiet(run: Run, name: str) -> None:
    """Other work on the machine skews every figure: wait (up to 20 minutes) until the CPUs
    are idle enough, and note how idle they were."""
    deadline = time.monotonic() + 20 * 60
    idle = machine_idle(2.0)
    while run.options.wait_idle and idle["idle"] < run.options.wait_idle:
        if time.monotonic() > deadline:
            log(f"{name}: the machine is still busy ({idle['idle']:.0%} idle); measuring anyway")
            break
        log(f"{name}: waiting for a quiet machine ({idle['idle']:.0%} idle)")
        time.sleep(10)
        idle = machine_idle(5.0)
    run.idle_before_part[name] = idle


def ceiling_ratios(results: dict[str, Any]) -> None:
    """Each ingest run's share of the ceiling (the mean of the ceiling before and after)."""
    runs = [
        results[key]["requests_per_s"] for key in ("ceiling", "ceiling_after") if key in results
    ]
    ceiling = sum(runs) / len(runs)
    results["ceiling_mean_rps"] = round(ceiling, 1)
    for key in ("ingest_embedded", "ingest_worker_on", "ingest_supabase"):
        if key in results:
            results[key]["ratio_to_ceiling"] = round(results[key]["requests_per_s"] / ceiling, 3)


def run_part(run: Run, name: str, body: Callable[[], None]) -> None:
    """A part that cannot run is reported (and fails the run), the others still run."""
    wait_for_quiet(run, name)
    started = time.monotonic()
    try:
        body()
    except Exception as exc:
        run.fail(f"{name} could not run: {type(exc).__name__}: {exc}")
        traceback.print_exc()
    log(f"{name}: {time.monotonic() - started:.0f} s")


def measure_all(run: Run) -> dict[str, Any]:
    options = run.options
    results: dict[str, Any] = {}
    tag = os.urandom(3).hex()
    want = options.only or set(PARTS)

    def only(name: str, body: Callable[[], None]) -> None:
        if name in want:
            run_part(run, name, body)

    def roundtrips() -> None:
        log("round trips per inbound text (transactions, statements)")
        results["round_trips"] = part_roundtrips(run)

    def e2e() -> None:
        from bench.flows import measure_e2e

        results["e2e"] = measure_e2e(run)

    def capacity() -> None:
        from bench.flows import measure_capacity

        results["capacity"] = measure_capacity(run)

    def drain() -> None:
        from bench.drain import measure_drain

        results["drain"] = measure_drain(run)

    def send() -> None:
        from bench.flows import measure_send

        results["send"] = measure_send(run)

    def memory() -> None:
        from bench.memory import measure_memory

        results["memory"] = measure_memory(run)

    def driver() -> None:
        from bench.driver import measure_drivers

        log("driver micro-benchmark: asyncpg vs psycopg 3 on the inbox insert")
        results["driver"] = measure_drivers(run)

    # Quiet parts first; the ones that leave the most behind (WAL, processes) last.
    only("roundtrips", roundtrips)
    only("ingest", lambda: part_ingest(run, results, tag))
    only("supabase", lambda: part_supabase(run, results, tag))
    if "ceiling" in results:
        # The machine's speed drifts: the ceiling again after the ingest runs, and the ratios
        # against the mean of both.
        log("ceiling again, after the ingest runs")
        results["ceiling_after"] = measure_ceiling(run, "a" + tag)
        ceiling_ratios(results)
    only("e2e", e2e)
    only("capacity", capacity)
    only("drain", drain)
    only("send", send)
    only("memory", memory)
    only("driver", driver)
    return results


# --- targets and the table ---------------------------------------------------------------------


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def add(name: str, wanted: str, value: str, met: bool) -> None:
        rows.append({"target": name, "wanted": wanted, "measured": value, "met": bool(met)})

    def ingest(key: str, label: str, share: float, p99: float | None) -> None:
        if key not in results:
            return
        r = results[key]
        ratio = r["ratio_to_ceiling"]
        add(
            f"ingest, {label}: share of the ceiling",
            f">= {share:.0%}",
            f"{ratio:.0%}",
            ratio >= share,
        )
        if p99 is not None:
            value = r["latency_ms"]["p99"]
            add(f"ingest, {label}: p99", f"<= {p99:g} ms", f"{value} ms", value <= p99)

    ingest("ingest_embedded", "embedded PostgreSQL, worker off", 0.55, 50)
    ingest("ingest_worker_on", "embedded PostgreSQL, worker on", 0.35, 100)
    ingest("ingest_supabase", "local Supabase database", 0.45, None)
    if "e2e" in results:
        for key, label in (
            ("in_process_worker", "worker in the API"),
            ("separate_worker", "separate worker"),
        ):
            r = results["e2e"][key]["steady_many_users"]
            p99 = r["latency_ms"]["p99"]
            add(
                f"e2e at {r['target_rate_per_s']:g} msg/s, {r['users']} users, {label}: p99",
                "<= 100 ms",
                f"{p99} ms",
                p99 <= 100 and r["replied"] == r["messages"] and not r["offer_errors"],
            )
    if "capacity" in results:
        c = results["capacity"]
        at = c.get("at_fixed_rate")
        if at is not None:
            p99 = at["latency_ms"]["p99"]
            add(
                f"capacity: new senders at {at['target_rate_per_s']:g}/s: p99",
                f"<= {c['target_p99_ms']:g} ms",
                f"{p99} ms (p50 {at['latency_ms']['p50']} ms)",
                p99 <= c["target_p99_ms"]
                and at["replied"] == at["messages"]
                and not at["offer_errors"],
            )
    if "drain" in results:
        d = results["drain"]
        add(
            f"drain of {d['backlog']:,} events: rate does not fall as the backlog shrinks "
            "(last tenth vs first)",
            ">= 90%",
            f"{d['last_to_first']:.0%} ({d['first_tenth_per_s']} → {d['last_tenth_per_s']} "
            f"events/s, slowest tenth {d['min_tenth_per_s']})",
            d["drained"] and d["last_to_first"] >= 0.9,
        )
    if "round_trips" in results:
        per = results["round_trips"]["per_inbound_message"]
        add(
            "transactions per inbound text, known conversation",
            "<= 4",
            f"{per['transactions']} ({per['statements']} statements, "
            f"{per['round_trips']} round trips)",
            per["transactions"] <= 4,
        )
    if "send" in results:
        ratio = results["send"]["ratio"]
        add("send API: share of the raw client", ">= 50%", f"{ratio:.0%}", ratio >= 0.5)
    if "memory" in results:
        api = results["memory"]["rss"]["api"]
        add("memory: API peak RSS", "<= 150 MB", f"{api['peak_mb']} MB", api["peak_mb"] <= 150)
        for name in ("api", "worker"):
            growth = results["memory"]["rss"][name]["growth_first_to_last_quarter"]
            add(
                f"memory: {name} growth first→last quarter", "< 10%", f"{growth:+.1%}", growth < 0.1
            )
    return rows


def _row(name: str, rate: str, latency: dict[str, float], errors: int, ratio: str) -> str:
    cells = [name, rate, *(f"{latency[key]:,}" for key in ("p50", "p90", "p99", "max"))]
    return "| " + " | ".join([*cells, str(errors), ratio]) + " |"


def table(results: dict[str, Any]) -> str:
    lines = [
        "| measurement | req/s or msg/s | p50 ms | p90 ms | p99 ms | max ms | errors "
        "| vs baseline |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def wrk_row(name: str, r: dict[str, Any], ratio: str) -> None:
        errors = r["errors"]["non_2xx"] + r["errors"]["socket"] + r["errors"]["timeout"]
        lines.append(_row(name, f"{r['requests_per_s']:,.0f}", r["latency_ms"], errors, ratio))

    def e2e_row(name: str, r: dict[str, Any]) -> None:
        errors = r["messages"] - r["replied"] + r.get("offer_errors", 0)
        lines.append(_row(name, f"{r['sustained_msgs_per_s']:,.1f}", r["latency_ms"], errors, ""))

    if "ceiling" in results:
        wrk_row("(0) ceiling: bare FastAPI, 64 conn", results["ceiling"], "1.00")
    if "ceiling_after" in results:
        wrk_row("(0) ceiling again, after the ingest runs", results["ceiling_after"], "1.00")
    for key, label in (
        ("ingest_embedded", "(1) ingest, embedded PostgreSQL, worker off"),
        ("ingest_worker_on", "(2) ingest, embedded PostgreSQL, worker on"),
        ("ingest_supabase", "(3) ingest, local Supabase DB (DATABASE_URL)"),
    ):
        if key in results:
            r = results[key]
            wrk_row(label, r, f"{r['ratio_to_ceiling']:.2f}")
    if "e2e" in results:
        e = results["e2e"]
        for key, label in (
            ("in_process_worker", "(4a) e2e, worker in the API"),
            ("separate_worker", "(4b) e2e, separate worker"),
        ):
            for phase, users in (("steady_many_users", ""), ("steady_one_user", ", one user")):
                if phase in e[key]:
                    r = e[key][phase]
                    e2e_row(
                        f"{label}, {r['target_rate_per_s']:g}/s{users}, {r['messages']} msgs", r
                    )
    if "capacity" in results:
        for r in results["capacity"]["steps"]:
            e2e_row(f"(5) capacity, new senders at {r['target_rate_per_s']:g}/s", r)
    if "send" in results:
        s = results["send"]
        for key, label, ratio in (
            ("send_api", "(8) send API /send/text", f"{s['ratio']:.2f}"),
            ("raw_emulator", "(8) raw httpx → emulator", "1.00"),
        ):
            r = s[key]
            lines.append(
                _row(
                    label,
                    f"{r['requests_per_s']:,.0f}",
                    r["latency_ms"],
                    r["errors"] + r["requests"] - r["ok"],
                    ratio,
                )
            )
    out = "\n".join(lines)
    if "ingest_worker_on" in results:
        d = results["ingest_worker_on"]["drain"]
        out += (
            f"\n\n(2) worker on: processed {d['processed_per_s_during_load']}/s during the load; "
            f"{d['unfinished_when_load_ended']:,} events unfinished when it ended "
            f"({'keeps up' if d['keeps_up'] else 'does not keep up'}); drained "
            f"{d['drain_after_load_s']} s later ({d['processed_per_s_after_load']}/s)"
        )
    if "capacity" in results:
        c = results["capacity"]
        out += (
            f"\n\n(5) capacity: highest rate with p99 <= {c['target_p99_ms']:g} ms: "
            f"{c['highest_rate_within_target']:g} new senders/s; profile: "
            + ", ".join(
                f"{name} {share:.0%}"
                for name, share in list(c["profile"]["self_by_layer"].items())[:6]
            )
        )
    if "drain" in results:
        d = results["drain"]
        out += (
            f"\n\n(6) drain: {d['backlog']:,} events by {d['workers']} workers in {d['drain_s']} s "
            f"({d['events_per_s_overall']}/s); per tenth: "
            + ", ".join(str(rate) for rate in d["events_per_s_by_tenth"])
        )
    if "round_trips" in results:
        r = results["round_trips"]
        per = r["per_inbound_message"]
        out += (
            "\n\n(7) per inbound text on a known conversation: "
            f"{per['transactions']} transactions, {per['statements']} statements, "
            f"{per['round_trips']} round trips ({per['pool_resets']} of them asyncpg's pool "
            f"resets); client side {per['transactions_client_side']} transactions, "
            f"{per['statements_client_side']} statements"
            f"\n    ingest: {', '.join(r['ingest']['client']['sequence'])}"
            f"\n    worker: {', '.join(r['processing']['client']['sequence'])}"
        )
    if "memory" in results:
        m = results["memory"]
        out += (
            f"\n\n(8) memory: API over {m['api_run']['deliveries']:,} deliveries, worker over "
            f"{m['worker_run']['deliveries']:,} (drained):"
        )
        for name, r in m["rss"].items():
            growth = r["growth_first_to_last_quarter"]
            out += (
                f"\n    {name}: peak {r['peak_mb']} MB, first quarter "
                f"{r['first_quarter_mean_mb']} MB → last quarter {r['last_quarter_mean_mb']} MB "
                f"({growth:+.1%})"
            )
    if "driver" in results:
        out += "\n\n(9) driver: " + ", ".join(
            f"{name} {value}" for name, value in results["driver"].get("ratios", {}).items()
        )
    checks = {
        name: section["count_check"]["ok"]
        for name, section in results.items()
        if isinstance(section, dict) and "count_check" in section
    }
    out += "\n\n(8) count checks: " + (
        ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in checks.items()) or "none run"
    )
    return out


# --- options and main --------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(prog="bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short durations, small runs")
    parser.add_argument("--duration", type=float, help="seconds per wrk run (default 20; quick 5)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--deliveries", type=int, help="the API memory run's size (default 100000; quick 5000)"
    )
    parser.add_argument(
        "--worker-deliveries",
        type=int,
        help="the worker memory run, drained to the end (default 10000; quick 2000)",
    )
    parser.add_argument("--e2e-rate", type=float, default=50.0)
    parser.add_argument("--e2e-seconds", type=float, help="default 10; quick 5")
    parser.add_argument("--e2e-users", type=int, default=20)
    parser.add_argument(
        "--capacity-seconds", type=float, help="seconds per capacity step (default 20; quick 5)"
    )
    parser.add_argument(
        "--capacity-steps",
        help="new senders per second, in order, until p99 passes the target "
        "(default 50,100,150,200,250,300; quick 50,100,150)",
    )
    parser.add_argument("--capacity-target-ms", type=float, default=250.0)
    parser.add_argument(
        "--capacity-rate",
        type=float,
        default=100.0,
        help="the fixed rate: always measured, and profiled with py-spy",
    )
    parser.add_argument("--profile-seconds", type=float, help="default 15; quick 5")
    parser.add_argument("--drain-users", type=int, help="conversations (default 2000; quick 100)")
    parser.add_argument("--drain-per-user", type=int, help="events each (default 50; quick 20)")
    parser.add_argument("--drain-workers", type=int, default=3)
    parser.add_argument("--send-seconds", type=float, help="default 15; quick 4")
    parser.add_argument("--send-concurrency", type=int, default=16)
    parser.add_argument("--only", default="", help="comma-separated subset: " + ",".join(PARTS))
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        help="before each part, wait until the CPUs are this idle (e.g. 0.9; a shared machine)",
    )
    parser.add_argument(
        "--output", type=Path, help="results file (default bench/results/<date>.json)"
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the other measurements already in the results file (run parts apart)",
    )
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    only = {part.strip() for part in args.only.split(",") if part.strip()}
    unknown = only - set(PARTS)
    if unknown:
        parser.error(f"unknown parts: {', '.join(sorted(unknown))} (known: {', '.join(PARTS)})")
    steps = args.capacity_steps or ("50,100,150" if quick else "50,100,150,200,250,300")
    return Options(
        quick=quick,
        duration=args.duration or (5.0 if quick else 20.0),
        connections=args.connections,
        deliveries=args.deliveries or (5_000 if quick else 100_000),
        worker_deliveries=args.worker_deliveries or (2_000 if quick else 10_000),
        e2e_rate=args.e2e_rate,
        e2e_seconds=args.e2e_seconds or (5.0 if quick else 10.0),
        e2e_users=args.e2e_users,
        capacity_seconds=args.capacity_seconds or (5.0 if quick else 20.0),
        capacity_steps=[float(step) for step in steps.split(",") if step.strip()],
        capacity_target_ms=args.capacity_target_ms,
        capacity_rate=args.capacity_rate,
        profile_seconds=args.profile_seconds or (5.0 if quick else 15.0),
        drain_users=args.drain_users or (100 if quick else 2_000),
        drain_per_user=args.drain_per_user or (20 if quick else 50),
        drain_workers=args.drain_workers,
        send_seconds=args.send_seconds or (4.0 if quick else 15.0),
        send_concurrency=args.send_concurrency,
        only=only,
        wait_idle=args.wait_idle,
        output=args.output,
        merge=bool(args.merge),
    )


def _terminate(signum: int, _frame: object) -> None:
    # SIGTERM as an exception, so every `finally` stops what this run started.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    run_dir = Path(tempfile.mkdtemp(prefix="fizko-bench-"))
    started = time.monotonic()
    load_before = os.getloadavg()
    idle_before = machine_idle()
    processes = Processes(run_dir)
    try:
        log(f"the run's embedded PostgreSQL (durable, as the service's default) in {run_dir}")
        with bench_cluster(run_dir / "postgres") as cluster:
            run = Run(options, run_dir, processes, cluster)
            try:
                results = measure_all(run)
            finally:
                processes.stop_all()
    finally:
        processes.stop_all()
        shutil.rmtree(run_dir, ignore_errors=True)
    output = options.output or RESULTS / f"{dt.date.today().isoformat()}.json"
    previous: dict[str, Any] = {}
    if options.merge and output.exists():
        previous = json.loads(output.read_text())
        results = {**previous.get("results", {}), **results}
    idle_parts = {
        **previous.get("machine", {}).get("cpu_idle_before_each_part", {}),
        **run.idle_before_part,
    }
    document = {
        "date": dt.date.today().isoformat(),
        "git_commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
        ).stdout.strip(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "cpu_idle_before": idle_before,
            "cpu_idle_after": machine_idle(),
            "cpu_idle_before_each_part": idle_parts,
        },
        "options": {
            "quick": options.quick,
            "wrk_duration_s": options.duration,
            "connections": options.connections,
            "uvicorn": " ".join(UVICORN_ARGS),
            "e2e_rate_per_s": options.e2e_rate,
            "e2e_seconds": options.e2e_seconds,
            "e2e_users": options.e2e_users,
            "capacity_seconds": options.capacity_seconds,
            "capacity_steps": options.capacity_steps,
            "capacity_target_ms": options.capacity_target_ms,
            "capacity_rate": options.capacity_rate,
            "profile_seconds": options.profile_seconds,
            "drain_backlog": options.drain_users * options.drain_per_user,
            "drain_workers": options.drain_workers,
            "send_seconds": options.send_seconds,
            "send_concurrency": options.send_concurrency,
            "memory_deliveries": options.deliveries,
            "memory_worker_deliveries": options.worker_deliveries,
        },
        "results": results,
        "targets": targets(results),
        "count_checks_failed": [
            name
            for name, section in results.items()
            if isinstance(section, dict) and not section.get("count_check", {}).get("ok", True)
        ],
        "failures": run.failures,
        "elapsed_s": round(time.monotonic() - started + previous.get("elapsed_s", 0), 1),
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    print()
    print(table(results))
    print()
    for row in document["targets"]:
        verdict = "met" if row["met"] else "MISSED"
        print(f"  [{verdict}] {row['target']}: {row['measured']} (target {row['wanted']})")
    print(f"\nResults: {output.relative_to(ROOT) if output.is_relative_to(ROOT) else output}")
    return 1 if run.failures or document["count_checks_failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
