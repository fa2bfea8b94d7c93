"""`recsys loadtest`: a bounded, headless Locust run on loopback, with the numbers a person wants at the end.

Starts `bentoml serve` itself (unless --url names a running loopback server), runs locustfile.py for a fixed time
with a fixed number of simulated users, stops everything, writes Locust's CSV and HTML reports, and prints
requests/s, p50/p95/p99 and failures. Exits non-zero if any request failed.
"""

from __future__ import annotations

import csv
import json
import logging
import subprocess
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse

from recsys.settings import PROJECT_ROOT
from serving.process import BIN, Server

log = logging.getLogger("recsys")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def summarize(stats_csv: Path) -> dict:
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


def run_loadtest(users: int, spawn_rate: float, duration: str, out_dir: Path, url: str | None = None) -> dict:
    if url and urlparse(url).hostname not in LOOPBACK:
        raise ValueError(f"--url {url}: load tests target loopback only (127.0.0.1)")
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = out_dir / "locust"
    with nullcontext(None) if url else Server() as server:
        host = url or server.url
        command = [str(BIN / "locust"), "-f", str(PROJECT_ROOT / "locustfile.py"), "--headless", "--host", host,
                   "-u", str(users), "-r", str(spawn_rate), "--run-time", duration, "--stop-timeout", "5",
                   "--csv", str(prefix), "--html", str(out_dir / "locust.html"), "--only-summary",
                   "--exit-code-on-error", "0"]
        log.info("running %s", " ".join(command))
        result = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True)
    if result.returncode != 0 or not Path(f"{prefix}_stats.csv").exists():
        raise RuntimeError(f"locust failed ({result.returncode}):\n{result.stderr[-3000:]}")
    summary = {"users": users, "duration": duration, "host": host, **summarize(Path(f"{prefix}_stats.csv"))}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def default_out_dir(reports_dir: Path) -> Path:
    return reports_dir / f"loadtest-{datetime.now():%Y%m%d-%H%M%S}"
