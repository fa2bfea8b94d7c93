"""`recsys loadtest`: a bounded, headless Locust run on loopback, with the numbers a person wants at the end.

Starts `bentoml serve` itself (unless --url names a running loopback server), runs locustfile.py for a fixed time
with a fixed number of simulated users, stops everything, writes Locust's CSV and HTML reports, and prints
requests/s, p50/p95/p99 and failures. Exits non-zero if any request failed.

`recsys soak` is the same run made long, with the resident memory of every service process sampled throughout
(memory.csv): it fails on any failed request or if a process keeps growing in the second half of the run.
"""

from __future__ import annotations

import csv
import json
import logging
import subprocess
import time
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from recsys.settings import PROJECT_ROOT
from recsys.tools.process import BIN, Server

log = logging.getLogger("recsys")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


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


def _run_locust(command: list[str], log_file: Path, server: Server | None, every: float) -> list[dict[str, Any]]:
    """Run Locust to the end; meanwhile sample the RSS of the server's processes every `every` seconds."""
    samples: list[dict[str, Any]] = []
    began = time.monotonic()
    with log_file.open("w") as out:
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT)
        while process.poll() is None:
            if server:
                samples.append({"seconds": round(time.monotonic() - began, 1), **server.rss_mb()})
            time.sleep(every)
    if process.returncode != 0:
        raise RuntimeError(f"locust failed ({process.returncode}):\n{log_file.read_text()[-3000:]}")
    return samples


def run_loadtest(users: int, spawn_rate: float, duration: str, out_dir: Path, url: str | None = None,
                 memory_every: float = 5.0) -> dict[str, Any]:
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
        log.info("running %s", " ".join(command))
        samples = _run_locust(command, out_dir / "locust.log", server, memory_every)
    if not Path(f"{prefix}_stats.csv").exists():
        raise RuntimeError(f"locust wrote no statistics:\n{(out_dir / 'locust.log').read_text()[-3000:]}")
    summary = {"users": users, "duration": duration, "host": host, **summarize(Path(f"{prefix}_stats.csv"))}
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
