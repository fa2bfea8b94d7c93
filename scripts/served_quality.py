"""Measure the served model's quality as a user would: hold out each user's latest liked items, tune and train on
the rest, serve it, and score the answers of ``POST /recommend`` for every held-out user against a tuned EASE.

The held-out ratings are cut from MovieLens' own ``u.data`` (the split is the loader's per-user split, so it is
the holdout a training run would use), and everything after that goes through the ordinary commands: `recsys tune
--no-train` with the default budget, then `recsys train --params` with each model seed, `bentoml serve` on
loopback, one ``POST /recommend`` per held-out user. EASE learns from the same ratings and ranks the same users;
its L2 weight is the one `recsys train` chooses on its label window, and, for a baseline that cannot be tuned
better, also the best weight on the held-out items themselves.

    .venv/bin/python scripts/movielens_like.py var/ml100k-like
    .venv/bin/python scripts/served_quality.py var/ml100k-like var/served-quality --seeds 42 43 44
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recsys.columns import Columns  # noqa: E402
from recsys.data.movielens import load_movielens_100k  # noqa: E402
from recsys.settings import PROJECT_ROOT, SplitSettings  # noqa: E402
from recsys.tools.process import Server  # noqa: E402
from recsys.training.baselines import EASE_GRID, choose_ease_l2, ease_recommend, ease_weights  # noqa: E402
from recsys.training.metrics import ranking_metrics  # noqa: E402
from recsys.training.split import split_interactions  # noqa: E402

K = 10


def hold_out(data_dir: Path, out: Path) -> pd.DataFrame:
    """Write ``data_dir``'s MovieLens files to ``out`` without the held-out ratings; return the held-out ones."""
    dataset = load_movielens_100k(data_dir)
    holdout = split_interactions(dataset.interactions, SplitSettings(), dataset.name).holdout
    raw = pd.read_csv(data_dir / "u.data", sep="\t", header=None, names=["u", "i", "r", "t"])
    held = pd.MultiIndex.from_arrays([holdout[Columns.User], holdout[Columns.Item],
                                      holdout[Columns.Datetime].astype("int64") // 10**9])
    keep = ~pd.MultiIndex.from_arrays([raw["u"], raw["i"], raw["t"]]).isin(held)
    out.mkdir(parents=True, exist_ok=True)
    raw[keep].to_csv(out / "u.data", sep="\t", header=False, index=False)
    for name in ("u.user", "u.item"):
        shutil.copy(data_dir / name, out / name)
    print(f"held out {int((~keep).sum())} ratings of {holdout[Columns.User].nunique()} users; "
          f"{int(keep.sum())} ratings left in {out}", flush=True)
    return holdout


def run(command: list[str], env: dict[str, str], log: Path) -> float:
    """`recsys COMMAND...` of this checkout (not necessarily the one installed), its output appended to ``log``."""
    started = time.perf_counter()
    with log.open("a") as sink:
        subprocess.run([sys.executable, "-m", "recsys.tools.cli", *command], env=env, cwd=PROJECT_ROOT, stdout=sink,
                       stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - started


def served_lists(env: dict[str, str], users: np.ndarray, log: Path) -> dict[int, list[int]]:
    """Each user's top-K item ids from ``POST /recommend`` of a freshly started server."""
    answers = {}
    with Server(env=env, log=log) as server:
        for user in users.tolist():
            body = json.dumps({"user_id": user, "top_k": K}).encode()
            request = urllib.request.Request(f"{server.url}/recommend", data=body,
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as response:
                answers[user] = [r["item_id"] for r in json.load(response)["recommendations"]]
    return answers


def score(lists: dict[int, list[int]], truth: sp.csr_matrix, users: np.ndarray, items: pd.Index) -> dict[str, float]:
    recommended = np.full((len(users), K), -1, dtype=np.int64)
    for row, user in enumerate(users.tolist()):
        found = items.get_indexer(lists[user][:K])
        recommended[row, : len(found)] = found
    return ranking_metrics(recommended, truth, len(items))


def ease_baseline(data_dir: Path, holdout: pd.DataFrame, users: np.ndarray, items: pd.Index) -> dict[str, object]:
    """EASE on the ratings left (what the served model learnt from), seen items filtered: with the weight chosen
    on its own label window (as `recsys train` does) and the best weight on the held-out items; and, as the served
    model does, with the titles rated below the threshold filtered too (the best weight on the held-out items)."""
    dataset = load_movielens_100k(data_dir)
    known = dataset.interactions
    inner = split_interactions(known, SplitSettings(), "movielens-100k")

    def matrix(frame: pd.DataFrame, rows: pd.Index) -> sp.csr_matrix:
        r, c = rows.get_indexer(frame[Columns.User]), items.get_indexer(frame[Columns.Item])
        ok = (r >= 0) & (c >= 0)
        return sp.csr_matrix((np.ones(int(ok.sum()), np.float32), (r[ok], c[ok])), shape=(len(rows), len(items)))

    everyone = pd.Index(np.unique(known[Columns.User]))
    subset = np.arange(len(items))

    def ndcg_on(history: sp.csr_matrix, window: pd.DataFrame, who: np.ndarray,
                excluded: sp.csr_matrix | None = None) -> Callable[[float], dict[str, float]]:
        truth = matrix(window, pd.Index(who))
        rows = everyone.get_indexer(who)
        seen, hidden = history[rows], None if excluded is None else excluded[rows]
        return lambda l2: ranking_metrics(ease_recommend(seen, ease_weights(history, l2), subset, K, excluded=hidden),
                                          truth, len(items))

    label_users = np.intersect1d(np.unique(inner.labels[Columns.User]), np.unique(inner.history[Columns.User]))
    on_labels = ndcg_on(matrix(inner.history, everyone), inner.labels, label_users)
    l2_labels, _ = choose_ease_l2(lambda l2: on_labels(l2)[f"ndcg@{K}"])
    on_holdout = ndcg_on(matrix(known, everyone), holdout, users)
    l2_best, by_l2 = choose_ease_l2(lambda l2: on_holdout(l2)[f"ndcg@{K}"], EASE_GRID)
    history = matrix(known, everyone)
    on_holdout_all = ndcg_on(history, holdout, users, history + matrix(dataset.dismissed, everyone))
    l2_all, _ = choose_ease_l2(lambda l2: on_holdout_all(l2)[f"ndcg@{K}"], EASE_GRID)
    return {"label_window": {"l2": l2_labels, **on_holdout(l2_labels)},
            "best_on_holdout": {"l2": l2_best, **on_holdout(l2_best)},
            "best_on_holdout_dismissed_filtered": {"l2": l2_all, **on_holdout_all(l2_all)},
            "ndcg_by_l2": {f"{k:.4g}": v for k, v in by_l2.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path, help="MovieLens-100k files (u.data, u.user, u.item)")
    parser.add_argument("work", type=Path, help="folder for the cut data, the models, the logs and the results")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44], help="model seeds to train and serve")
    parser.add_argument("--budget", default=None, help="`recsys tune --budget` (default: its default)")
    parser.add_argument("--trials", type=int, default=None,
                        help="`recsys tune --trials` (default: its default); with a long --budget, the same search "
                             "whatever the machine's load, to compare two versions")
    parser.add_argument("--params", type=Path, help="skip the search and train with this parameters file")
    parser.add_argument("--no-tune", action="store_true", help="train with the defaults (the 'before tuning' row)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    train_dir, log = work / "data", work / "commands.log"
    holdout = hold_out(args.data_dir, train_dir)
    env = {**os.environ, "RECSYS_HOME": str(work / "home"), "BENTOML_HOME": str(work / "bentoml"),
           "RECSYS_LOG_LEVEL": "INFO"}
    data_args = ["--dataset", "movielens-100k", "--data-dir", str(train_dir)]
    result: dict[str, object] = {"load_before": os.getloadavg()}

    params = args.params
    if params is None and not args.no_tune:
        params = work / "params.json"
        budget = (["--budget", args.budget] if args.budget else []) + (["--trials", str(args.trials)] if args.trials else [])
        result["tune_seconds"] = run(["tune", *data_args, "--no-train", "--out", str(params),
                                      *budget], env, log)
        print(f"tuned in {result['tune_seconds']:.0f}s: {params}", flush=True)

    items = pd.Index(load_movielens_100k(args.data_dir).items[Columns.Item].to_numpy())
    users = np.unique(holdout[Columns.User].to_numpy())
    r, c = pd.Index(users).get_indexer(holdout[Columns.User]), items.get_indexer(holdout[Columns.Item])
    truth = sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(len(users), len(items)))
    served = []
    for seed in args.seeds:
        seconds = run(["train", *data_args, "--seed", str(seed),
                       *(["--params", str(params)] if params else [])], env, log)
        metrics = score(served_lists(env, users, work / f"serve-{seed}.log"), truth, users, items)
        served.append({"seed": seed, "train_seconds": round(seconds, 1), **metrics})
        print(json.dumps(served[-1]), flush=True)
    result["served"] = served
    result["ease"] = ease_baseline(train_dir, holdout, users, items)
    ndcg = [s[f"ndcg@{K}"] for s in served]
    mean, sd = statistics.fmean(ndcg), statistics.stdev(ndcg) if len(ndcg) > 1 else 0.0
    result["summary"] = {"users": len(users), "ndcg_mean": mean, "ndcg_sd": sd,
                         **{f"gain_vs_ease_{name}": mean / e[f"ndcg@{K}"] - 1 for name, e in result["ease"].items()
                            if name != "ndcg_by_l2"}}
    result["load_after"] = os.getloadavg()
    (work / "result.json").write_text(json.dumps(result, indent=1, default=str))
    print(json.dumps({"summary": result["summary"], "ease": {k: v for k, v in result["ease"].items()
                                                            if k != "ndcg_by_l2"}}, indent=1, default=str))


if __name__ == "__main__":
    main()
