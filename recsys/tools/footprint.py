"""`recsys footprint`: how long the service takes to start and how much memory each of its processes holds.

For each configuration (topology and entry workers), `bentoml serve` starts on loopback and is timed to its
first `/readyz` 200. Each service process's memory is then read from ``/proc/<pid>/smaps_rollup`` twice: when it
is ready, and after `/recommend/batch` and the web page's `/ui/api/history` were asked about ``users`` of the
served users (so the pages of per-user data a real load touches are in). RSS counts every page a process maps,
so N processes that map one file count it N times; PSS divides each shared page among the processes that map it,
so the PSS of all processes adds up to what they use together. ``anon`` is the PSS of anonymous memory (the
process's own heap: what a copy per worker costs), ``file`` that of mapped files (model arrays in the page cache,
shared between processes and reclaimable). Everything runs on loopback and is bounded in time.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from recsys.core import model_store
from recsys.core.candidates import load_array
from recsys.tools.process import Server

CONFIGS = {
    "split": {"RECSYS_SERVING__TOPOLOGY": "split", "RECSYS_SERVING__WORKERS": "1"},
    "fused": {"RECSYS_SERVING__TOPOLOGY": "fused", "RECSYS_SERVING__WORKERS": "1"},
    "fused-2": {"RECSYS_SERVING__TOPOLOGY": "fused", "RECSYS_SERVING__WORKERS": "2"},
}
FIELDS = {"Rss": "rss", "Pss": "pss", "Pss_Anon": "anon", "Pss_File": "file", "Shared_Clean": "shared",
          "Shared_Dirty": "shared", "Private_Clean": "private", "Private_Dirty": "private"}
BATCH = 100  # users per /recommend/batch call (serving.max_batch_users' default)


def memory_mb(pid: int) -> dict[str, float]:
    """RSS, PSS (anonymous and file-backed), shared and private memory of one process, in MB, and ``mapped``: the
    size of the model store's files it maps (what its file-backed pages grow to once every user was asked for;
    shared by every process that maps them)."""
    totals = dict.fromkeys(FIELDS.values(), 0.0)
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in FIELDS:
            totals[FIELDS[key]] += int(rest.split()[0]) / 1024  # kB
    models = str(Path(model_store.store_home()).resolve() / "models")
    files = {line.split(maxsplit=5)[-1] for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
             if models in line}
    totals["mapped"] = sum(Path(f).stat().st_size for f in files if Path(f).exists()) / 2**20
    return {k: round(v, 1) for k, v in totals.items()}


def processes(server: Server) -> dict[str, dict[str, float]]:
    """Memory of every service process, named `service/n` (n counts a service's workers from 1)."""
    return {f"{name}/{n}": memory_mb(pid) for name, pids in sorted(server.service_pids().items())
            for n, pid in enumerate(sorted(pids), start=1)}


def served_users(count: int, seed: int = 0) -> list[int]:
    """``count`` distinct users of the served pair, drawn at random (every user's data is equally likely to be
    asked for)."""
    model = model_store.get_model(model_store.CANDIDATES, model_store.resolve_version(
        os.environ.get("RECSYS_SERVING__MODEL_VERSION")))
    ids = load_array(Path(model.path_of(model_store.CANDIDATES_DIR)) / "user_ids.npy", mmap=True)
    picked = np.random.default_rng(seed).choice(len(ids), size=min(count, len(ids)), replace=False)
    return [int(u) for u in ids[np.sort(picked)]]


def _ask(server: Server, users: list[int]) -> None:
    for lo in range(0, len(users), BATCH):
        body = json.dumps({"requests": [{"user_id": u, "top_k": 10} for u in users[lo:lo + BATCH]]}).encode()
        request = urllib.request.Request(f"{server.url}/recommend/batch", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
    for user in users[:: max(1, len(users) // 200)]:  # the page's history look-ups: the entry's showcase
        with urllib.request.urlopen(f"{server.url}/ui/api/history?user_id={user}", timeout=30) as response:
            response.read()


def measure(config: str, users: list[int], log_dir: Path) -> dict[str, Any]:
    """Start-up time and memory per process of one configuration."""
    env = {**os.environ, **CONFIGS[config]}
    load = os.getloadavg()[0]
    started = time.monotonic()
    with Server(env, ready_timeout=600, log=log_dir / f"serve-{config}.log") as server:
        ready_s = time.monotonic() - started
        at_ready = processes(server)
        _ask(server, users)
        after = processes(server)
    return {"config": config, "ready_s": round(ready_s, 1), "load_average": load, "users_asked": len(users),
            "at_ready": at_ready, "after_requests": after}


def run_footprint(out_dir: Path, configs: list[str], users: int) -> list[dict[str, Any]]:
    out_dir.mkdir(parents=True, exist_ok=True)
    asked = served_users(users)
    results = [measure(config, asked, out_dir) for config in configs]
    (out_dir / "footprint.json").write_text(json.dumps(results, indent=2))
    (out_dir / "footprint.md").write_text(markdown(results))
    return results


def markdown(results: list[dict[str, Any]]) -> str:
    """One row per process: ready time, then its memory when ready and after the requests (MB)."""
    lines = ["| config | ready s | load | process | RSS | PSS | anon | file | shared | private | RSS after | PSS after "
             "| anon after | file after | model files mapped |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for name, m in r["at_ready"].items():
            a = r["after_requests"].get(name, {})
            lines.append(f"| {r['config']} | {r['ready_s']} | {r['load_average']:.1f} | {name} | {m['rss']:.0f} | "
                         f"{m['pss']:.0f} | {m['anon']:.0f} | {m['file']:.0f} | {m['shared']:.0f} | {m['private']:.0f} | "
                         + " | ".join(f"{a.get(k, 0):.0f}" for k in ("rss", "pss", "anon", "file", "mapped")) + " |")
        total = {k: sum(m[k] for m in r["after_requests"].values()) for k in ("pss", "anon")}
        lines.append(f"| {r['config']} | | | **all, after** | | | | | | | | **{total['pss']:.0f}** | "
                     f"**{total['anon']:.0f}** | | |")
    return "\n".join(lines) + "\n"


def default_out_dir(reports: Path) -> Path:
    return reports / f"footprint-{datetime.now():%Y%m%d-%H%M%S}"
