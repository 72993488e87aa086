"""py-spy on a running service, and a summary of where its time goes.

`py-spy record --format speedscope` writes one sampled profile per thread; the summary reads
every thread's samples: a function's *self* share is how often it was the innermost frame,
its *total* share how often it was anywhere on the stack; *by component*, each sample goes to
the innermost frame outside the standard library (the library or our module that asked for
the work). Shares are of the samples taken (py-spy skips idle threads unless asked), and
`cpu_busy` says how busy the process was (samples per tick: a thread runnable but waiting
for a CPU counts as busy).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

# Where a frame's file lives → the layer it belongs to (first match wins).
LAYERS = (
    ("backend/app/", "our code (app)"),
    ("/asyncpg/", "asyncpg"),
    ("/httpx/", "httpx/httpcore"),
    ("/httpcore/", "httpx/httpcore"),
    ("/h11/", "httpx/httpcore"),
    ("/uvicorn/", "uvicorn"),
    ("/starlette/", "starlette/fastapi"),
    ("/fastapi/", "starlette/fastapi"),
    ("/pydantic", "pydantic"),
    ("/anyio/", "anyio"),
    ("/uvloop/", "uvloop"),
    ("/asyncio/", "asyncio"),
    ("/logging/", "logging"),
)


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise RuntimeError("py-spy is not installed (a dev dependency: uv sync)")
    return found


def start_record(
    pid: int, output: Path, seconds: float, rate: int = 100
) -> subprocess.Popen[bytes]:
    """py-spy record on `pid` for `seconds`, without pausing it (--nonblocking), in speedscope
    format (native extensions' frames are not unwound: their time shows in the Python frame
    that called them)."""
    argv = [
        py_spy(),
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(seconds))),
        "--rate",
        str(rate),
        "--format",
        "speedscope",
        "--output",
        str(output),
        "--nonblocking",
    ]
    return subprocess.Popen(  # noqa: S603 - our own argv
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def finish_record(process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    _, stderr = process.communicate(timeout=timeout)
    if process.returncode != 0:
        raise RuntimeError(f"py-spy failed ({process.returncode}): {stderr.decode()[-2000:]}")


def frame_name(frame: dict[str, Any]) -> str:
    file = str(frame.get("file") or "")
    for marker in ("backend/", "site-packages/", "lib/python3.11/"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    line = frame.get("line")
    return f"{frame.get('name', '?')} ({file}{f':{line}' if line else ''})"


def layer(frame: dict[str, Any]) -> str:
    file = str(frame.get("file") or "")
    for marker, name in LAYERS:
        if marker in file:
            return name
    return "other"


def component(frame: dict[str, Any]) -> str | None:
    """The layer of a frame outside the standard library (None for the standard library)."""
    file = str(frame.get("file") or "")
    if "site-packages/" not in file and "backend/" not in file:
        return None
    return layer(frame)


_LOOP_DRIVERS = ("_run", "_run_once", "run_forever", "run_until_complete", "run")


def drives_the_loop(frame: dict[str, Any]) -> bool:
    """asyncio's own frames that run callbacks and tasks (with uvloop, only Runner.run)."""
    name = str(frame.get("name") or "").rsplit(".", 1)[-1]
    return "asyncio/" in str(frame.get("file") or "") and name in _LOOP_DRIVERS


def summarise(path: Path, *, seconds: float, rate: int = 100, top: int = 15) -> dict[str, Any]:
    """Top functions by self and total share, and self time by layer, over all threads."""
    document = json.loads(path.read_text())
    frames: list[dict[str, Any]] = document["shared"]["frames"]
    names = [frame_name(frame) for frame in frames]
    # py-spy's frames carry the line of the sample: group a function's lines together.
    functions = [name.rsplit(":", 1)[0] + ")" if ":" in name else name for name in names]
    layers = [layer(frame) for frame in frames]
    components = [component(frame) for frame in frames]
    drivers = [drives_the_loop(frame) for frame in frames]
    self_counts: Counter[str] = Counter()
    total_counts: Counter[str] = Counter()
    layer_counts: Counter[str] = Counter()
    component_counts: Counter[str] = Counter()
    samples = 0
    threads = []
    for profile in document["profiles"]:
        # Every sample is one tick of py-spy's clock (its weights are 1/rate seconds each).
        thread_samples = 0
        for stack in profile["samples"]:
            if not stack:
                continue
            thread_samples += 1
            leaf = stack[-1]
            self_counts[functions[leaf]] += 1
            layer_counts[layers[leaf]] += 1
            # Whose work it is: the innermost frame outside the standard library (a socket
            # write asyncio makes for asyncpg is asyncpg's).
            # Only frames the loop runs count: below it is the launcher (uvicorn's main).
            start = max((i + 1 for i, index in enumerate(stack) if drivers[index]), default=0)
            owner = next(
                (components[index] for index in reversed(stack[start:]) if components[index]),
                "event loop / standard library",
            )
            component_counts[owner] += 1
            for name in {functions[index] for index in stack}:
                total_counts[name] += 1
        samples += thread_samples
        threads.append({"name": profile.get("name", "?"), "samples": thread_samples})

    def share(count: int) -> float:
        return round(count / samples, 3) if samples else 0.0

    return {
        "samples": samples,
        "seconds": seconds,
        "rate_per_s": rate,
        # Samples where a thread was running Python (not idle), per second of wall time.
        "cpu_busy": round(samples / (seconds * rate), 2) if seconds else None,
        "threads": threads,
        "self_by_layer": {name: share(count) for name, count in layer_counts.most_common()},
        "by_component": {name: share(count) for name, count in component_counts.most_common()},
        "top_self": [
            {"function": name, "share": share(count)}
            for name, count in self_counts.most_common(top)
        ],
        "top_total": [
            {"function": name, "share": share(count)}
            for name, count in total_counts.most_common(top)
        ],
    }
