"""CPU milliseconds per user of the served pair's candidate generation, against another version of the code.

Loads the newest pair of the BentoML store (``BENTOML_HOME``) as serving does (arrays memory-mapped, one BLAS
thread) twice: with this checkout's ``recsys/core/candidates.py`` and with ``--against`` (another version of that
file, e.g. ``git show main:recsys/core/candidates.py > /tmp/main_candidates.py``). For each batch size it first
checks that both give the same candidates and features, bit for bit, for ``--users`` random known users (with and
without the seen filter), then times both on the same batches, alternating which goes first, and prints the median
of ``--rounds`` process-CPU measurements: CPU time moves less with the machine's load than latency does.

    BENTOML_HOME=var/kionbento .venv/bin/python scripts/candidates_cost.py --against /tmp/main_candidates.py
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recsys.core import candidates, model_store  # noqa: E402


def load_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("other_candidates", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def same(a: candidates.CandidateBatch, b: candidates.CandidateBatch) -> bool:
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("owner", "items", "features"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", type=Path, required=True, help="another version of recsys/core/candidates.py")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--users", type=int, default=1000, help="random known users compared and timed per batch size")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--without-stored-lists", action="store_true",
                        help="this checkout computes every user's lists per request, as a pair without stored lists")
    args = parser.parse_args()
    threadpool_limits(1)
    path = Path(model_store.get_model(model_store.CANDIDATES, model_store.resolve_version()).path_of(
        model_store.CANDIDATES_DIR))
    models = {"this": candidates.CandidateModel.load(path, mmap=True, stored_lists=not args.without_stored_lists),
              "against": load_module(args.against).CandidateModel.load(path, mmap=True)}
    mix = models["this"].served_mix(candidates.Mix(100, 30, 30, 0))
    rng = np.random.default_rng(0)
    for b in args.batches:
        batches = [rng.choice(len(models["this"].user_ids), b, replace=False) for _ in range(max(1, args.users // b))]
        differ = sum(not same(models["this"].generate(rows, mix, seen), models["against"].generate(rows, mix, seen))
                     for rows in batches for seen in (True, False))
        cpu: dict[str, list[float]] = {name: [] for name in models}
        for r in range(args.rounds):
            for name in (("this", "against") if r % 2 else ("against", "this")):
                start = time.process_time()
                for rows in batches:
                    models[name].generate(rows, mix)
                cpu[name].append((time.process_time() - start) * 1000 / (len(batches) * b))
        print(json.dumps({"batch": b, "users": len(batches) * b, "differing_batches": differ,
                          "cpu_ms_per_user": {k: round(float(np.median(v)), 4) for k, v in cpu.items()},
                          "load_average": os.getloadavg()[0]}), flush=True)


if __name__ == "__main__":
    main()
