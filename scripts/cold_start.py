"""The first requests after a cold start, with and without serving's read-ahead (recsys/serving/page_cache.py).

Drops the host's page cache (root only: it writes /proc/sys/vm/drop_caches; everything on the host then reads
from disk again for a while), starts `bentoml serve` on loopback with ``RECSYS_SERVING__READ_AHEAD`` on or off,
and times `/readyz` and the first ``--users`` distinct served users asked one at a time (each touches its own
pages of the memory-mapped per-user files). Bounded by the user count; loopback only.

    BENTOML_HOME=var/kion/bentoml .venv/bin/python scripts/cold_start.py --read-ahead false
    BENTOML_HOME=var/kion/bentoml .venv/bin/python scripts/cold_start.py --read-ahead true
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recsys.tools.footprint import served_users  # noqa: E402
from recsys.tools.process import Server  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--read-ahead", choices=["true", "false"], required=True)
    parser.add_argument("--users", type=int, default=400)
    parser.add_argument("--topology", default="split")
    args = parser.parse_args()
    users = served_users(args.users, seed=1)
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")
    env = {**os.environ, "RECSYS_SERVING__READ_AHEAD": args.read_ahead, "RECSYS_SERVING__TOPOLOGY": args.topology}
    load, started = os.getloadavg()[0], time.monotonic()
    with Server(env, ready_timeout=600) as server:
        ready_s = time.monotonic() - started
        latencies = []
        for user in users:
            request = urllib.request.Request(f"{server.url}/recommend", headers={"Content-Type": "application/json"},
                                             data=json.dumps({"user_id": user, "top_k": 10}).encode())
            sent = time.perf_counter()
            with urllib.request.urlopen(request, timeout=60) as response:
                response.read()
            latencies.append((time.perf_counter() - sent) * 1000)
    ms = np.array(latencies)
    print(f"read_ahead={args.read_ahead} load={load:.1f} ready={ready_s:.1f} s, first {len(ms)} users: "
          f"mean {ms.mean():.1f} ms, p50 {np.percentile(ms, 50):.1f}, p99 {np.percentile(ms, 99):.1f}, "
          f"max {ms.max():.1f}")


if __name__ == "__main__":
    main()
