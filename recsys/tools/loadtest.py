"""`recsys loadtest`: a bounded, headless Locust run on loopback, with the numbers a person wants at the end.

Starts `bentoml serve` itself (unless --url names a running loopback server), runs locustfile.py for a fixed time
with a fixed number of simulated users, stops everything, writes Locust's CSV and HTML reports, and prints
requests/s, p50/p95/p99 and failures. Exits non-zero if any request failed.

With ``--workers N`` Locust runs distributed: a master (which spreads the users, gathers the statistics and writes
the reports) and N worker processes that send the requests, here all on loopback; on other machines the same
workers are `locust -f locustfile.py --worker --master-host <master>` (see README, "Load from several machines").

`recsys soak` is the same run made long, with the resident memory of every service process sampled throughout
(memory.csv): it fails on any failed request or if a process keeps growing in the second half of the run.
"""

from __future__ import annotations

import csv
import json
import logging
import subprocess
import time
from collections.abc import Sequence
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from recsys.settings import PROJECT_ROOT
from recsys.tools.process import BIN, Server, free_port

log = logging.getLogger("recsys")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
WORKERS_WAIT_S = 60  # the master gives up if its workers have not all connected by then
WORKER_EXIT_S = 30


def summarize(stats_csv: Path) -> dict[str, Any]:
    """The 'Aggregated' row of Locust's stats CSV, as numbers."""
    with stats_csv.open() as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    row = rows["Aggregated"]
    return {
        "requests": int(row["Request Count"]),
        "failures": int(row["Failure Count"]),
        "rps": float(row["Requests/s"]),
        "p50_ms": float(row["50%"]),
        "p95_ms": float(row["95%"]),
        "p99_ms": float(row["99%"]),
        "by_route": {name: {"requests": int(r["Request Count"]), "failures": int(r["Failure Count"]),
                            "p50_ms": float(r["50%"]), "p99_ms": float(r["99%"])}
                     for name, r in rows.items() if name != "Aggregated"},
    }


def memory_summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Per service: RSS at the start, half-way and at the end, the peak, and the growth over the second half.
    Allocators and caches fill up during the first minutes (seen: +40 MB in the entry, then flat); a leak keeps
    growing in the second half too."""
    start, mid, end = samples[0], samples[len(samples) // 2], samples[-1]
    return {name: {"start_mb": start[name], "mid_mb": mid[name], "end_mb": end[name],
                   "peak_mb": max(s.get(name, 0.0) for s in samples),
                   "growth_mb": round(end[name] - mid[name], 1),
                   "growth_pct": round(100 * (end[name] - mid[name]) / mid[name], 1)}
            for name in end if name in start and name in mid and name != "seconds"}


def _run_locust(command: list[str], log_file: Path, server: Server | None, every: float,
                workers: Sequence[list[str]] = ()) -> list[dict[str, Any]]:
    """Run Locust to the end, with its ``workers`` (each logs to ``worker-<n>.log`` beside ``log_file``); meanwhile
    sample the RSS of the server's processes every `every` seconds."""
    samples: list[dict[str, Any]] = []
    began = time.monotonic()
    started: list[subprocess.Popen[bytes]] = []
    try:
        with log_file.open("w") as out:
            process = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT)
            for n, argv in enumerate(workers, 1):
                with (log_file.parent / f"worker-{n}.log").open("w") as worker_out:
                    started.append(subprocess.Popen(argv, cwd=PROJECT_ROOT, stdout=worker_out,
                                                    stderr=subprocess.STDOUT))
            while process.poll() is None:
                if server:
                    samples.append({"seconds": round(time.monotonic() - began, 1), **server.rss_mb()})
                time.sleep(every)
        for worker in started:  # the master tells its workers to quit as it stops
            worker.wait(timeout=WORKER_EXIT_S)
    finally:
        for worker in started:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    if process.returncode != 0:
        raise RuntimeError(f"locust failed ({process.returncode}):\n{log_file.read_text()[-3000:]}")
    if failed := [n for n, worker in enumerate(started, 1) if worker.returncode != 0]:
        raise RuntimeError(f"locust workers {failed} failed:\n" + "\n".join(
            (log_file.parent / f"worker-{n}.log").read_text()[-1500:] for n in failed))
    return samples


def _distributed(command: list[str], workers: int) -> tuple[list[str], list[list[str]]]:
    """The master's command (listening on a free loopback port, waiting for its workers, at most
    WORKERS_WAIT_S) and the workers' commands."""
    port = free_port()
    master = [*command, "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
              "--expect-workers", str(workers), "--expect-workers-max-wait", str(WORKERS_WAIT_S)]
    worker = [str(BIN / "locust"), "-f", str(PROJECT_ROOT / "locustfile.py"), "--worker", "--master-host",
              "127.0.0.1", "--master-port", str(port), "--headless"]
    return master, [worker] * workers


def run_loadtest(users: int, spawn_rate: float, duration: str, out_dir: Path, url: str | None = None,
                 memory_every: float = 5.0, workers: int = 0) -> dict[str, Any]:
    if url and urlparse(url).hostname not in LOOPBACK:
        raise ValueError(f"--url {url}: load tests target loopback only (127.0.0.1)")
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = out_dir / "locust"
    with nullcontext(None) if url else Server() as server:
        host = url or (server.url if server else "")
        command = [str(BIN / "locust"), "-f", str(PROJECT_ROOT / "locustfile.py"), "--headless", "--host", host,
                   "-u", str(users), "-r", str(spawn_rate), "--run-time", duration, "--stop-timeout", "5",
                   "--csv", str(prefix), "--html", str(out_dir / "locust.html"), "--only-summary",
                   "--exit-code-on-error", "0"]
        worker_commands: list[list[str]] = []
        if workers:
            command, worker_commands = _distributed(command, workers)
        log.info("running %s%s", " ".join(command), f" with {workers} workers" if workers else "")
        samples = _run_locust(command, out_dir / "locust.log", server, memory_every, worker_commands)
    if not Path(f"{prefix}_stats.csv").exists():
        raise RuntimeError(f"locust wrote no statistics:\n{(out_dir / 'locust.log').read_text()[-3000:]}")
    summary = {"users": users, "duration": duration, "host": host, "workers": workers,
               **summarize(Path(f"{prefix}_stats.csv"))}
    if samples:
        with (out_dir / "memory.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(samples[-1]))
            writer.writeheader()
            writer.writerows(samples)
        summary["memory"] = memory_summary(samples)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def default_out_dir(reports_dir: Path, kind: str = "loadtest") -> Path:
    return reports_dir / f"{kind}-{datetime.now():%Y%m%d-%H%M%S}"
