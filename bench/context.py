"""What every measurement of a run shares: the options, the run's processes and database."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import Processes
from bench.store import BenchCluster, StoreRef


@dataclass
class Options:
    quick: bool
    duration: float  # seconds per wrk run
    connections: int
    deliveries: int  # the API memory run
    worker_deliveries: int  # the worker memory run
    e2e_rate: float
    e2e_seconds: float
    e2e_users: int
    capacity_seconds: float
    capacity_steps: list[float]
    capacity_target_ms: float
    capacity_rate: float  # the fixed rate: always measured, and profiled
    profile_seconds: float
    drain_users: int
    drain_per_user: int
    drain_workers: int
    send_seconds: float
    send_concurrency: int
    only: set[str]
    wait_idle: float  # before each part: wait until the CPUs are this idle (0: do not wait)
    output: Path | None
    merge: bool


@dataclass
class Run:
    options: Options
    run_dir: Path
    processes: Processes
    cluster: BenchCluster
    ceiling_rps: float = 0.0
    failures: list[str] = field(default_factory=list)
    idle_before_part: dict[str, dict[str, float]] = field(default_factory=dict)
    _databases: int = 0

    def fail(self, message: str) -> None:
        print(f"!! {message}", file=sys.stderr, flush=True)
        self.failures.append(message)

    def database(self, name: str) -> StoreRef:
        """A fresh migrated database for one measurement."""
        self._databases += 1
        return self.cluster.database(f"bench_{self._databases:02d}_{name}")


def log(message: str) -> None:
    print(f"==> {message}", flush=True)
