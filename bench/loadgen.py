"""A closed-loop HTTP load generator on its own process: `python -m bench.loadgen ...`.

The same generator drives the send API and the raw calls to the emulator it is compared with,
so the ratio compares the servers, not two clients. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time

import httpx

from bench.common import client_limits, percentile


async def run(
    url: str, body: bytes, headers: dict[str, str], concurrency: int, duration: float
) -> dict[str, object]:
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors = 0
    limits = client_limits(concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        deadline = time.monotonic() + duration

        async def worker() -> None:
            nonlocal errors
            while time.monotonic() < deadline:
                started = time.perf_counter()
                try:
                    response = await client.post(url, content=body, headers=headers)
                except httpx.HTTPError:
                    errors += 1
                    continue
                latencies.append((time.perf_counter() - started) * 1000)
                key = str(response.status_code)
                statuses[key] = statuses.get(key, 0) + 1

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.monotonic() - started
    latencies.sort()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    ok = sum(count for status, count in statuses.items() if status.startswith("2"))
    return {
        "concurrency": concurrency,
        "duration_s": round(elapsed, 2),
        "requests": len(latencies),
        "ok": ok,
        "statuses": statuses,
        "errors": errors,
        "requests_per_s": round(ok / elapsed, 1),
        "latency_ms": {
            "p50": round(percentile(latencies, 50), 2),
            "p90": round(percentile(latencies, 90), 2),
            "p99": round(percentile(latencies, 99), 2),
            "max": round(latencies[-1], 2) if latencies else 0.0,
        },
        "generator_cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.loadgen")
    parser.add_argument("--url", required=True)
    parser.add_argument("--body", required=True, help="the JSON body sent every time")
    parser.add_argument("--header", action="append", default=[], help="'Name: value'")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args()
    headers = {"Content-Type": "application/json"}
    for header in args.header:
        name, _, value = header.partition(":")
        headers[name.strip()] = value.strip()
    result = asyncio.run(
        run(args.url, args.body.encode(), headers, args.concurrency, args.duration)
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
