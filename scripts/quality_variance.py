"""Measure how much the offline metrics move between seeds, to set the quality tests' margins from data.

For every seed it generates the synthetic dataset with that seed (or always with `--data-seed`), trains with
that seed (single-threaded, as the tests do) and evaluates on the holdout window, exactly as `recsys train` does
(stages A and B of the pipeline). It prints each model's ndcg@10 and map@10 and the differences the tests
assert, then their mean, standard deviation and minimum over the seeds; `--out` also writes them as JSON.
See docs/quality-tests.md.

    .venv/bin/python scripts/quality_variance.py --size medium --seeds 1 2 3 4 5 6 42
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recsys.data.synthetic import SIZES, generate  # noqa: E402
from recsys.settings import Settings  # noqa: E402
from recsys.training.pipeline import fit_and_evaluate  # noqa: E402

METRICS = ("ndcg@10", "map@10")
# (better, worse): the comparisons the quality tests make
PAIRS = (("two_stage", "lightfm"), ("two_stage", "ease"), ("two_stage", "popular"), ("lightfm", "popular"))


def measure(size: str, seed: int, data_seed: int, home: Path) -> dict:
    """One run: every model's metrics, the differences of PAIRS, the number of users evaluated and the seconds.

    ``seed`` seeds the models (LightFM, CatBoost, the reranker's sampling), ``data_seed`` the generator.
    """
    settings = Settings(home=home, data={"dataset": "synthetic", "size": size, "seed": seed}).single_threaded()
    started = time.perf_counter()
    evaluation = fit_and_evaluate(generate(size, seed=data_seed), settings).evaluation
    metrics = evaluation["metrics"]
    row = {"seed": seed, "data seed": data_seed, "users": evaluation["users"],
           "seconds": round(time.perf_counter() - started, 1)}
    for metric in METRICS:
        for model in metrics:
            row[f"{model} {metric}"] = metrics[model][metric]
        for better, worse in PAIRS:
            row[f"{better}-{worse} {metric}"] = metrics[better][metric] - metrics[worse][metric]
    return row


def summarise(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Mean, sample standard deviation and minimum of every numeric column over the seeds."""
    columns = [c for c in rows[0] if "seed" not in c]
    return {c: {"mean": statistics.mean(r[c] for r in rows), "std": statistics.stdev(r[c] for r in rows),
                "min": min(r[c] for r in rows)} for c in columns}


def markdown(rows: list[dict], summary: dict[str, dict[str, float]]) -> str:
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(f"{r[c]:.4f}" if "@" in c else str(r[c]) for c in columns) + " |" for r in rows]
    for stat in ("mean", "std", "min"):
        lines.append(f"| {stat} | | " + " | ".join(f"{summary[c][stat]:.4f}" if "@" in c else f"{summary[c][stat]:.0f}"
                                                  for c in columns[2:]) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6])
    parser.add_argument("--data-seed", type=int, help="generate the data with this one seed and vary only the models' "
                                                        "seed (default: each seed seeds the data too)")
    parser.add_argument("--out", type=Path, help="also write the rows and the summary as JSON here")
    args = parser.parse_args()
    if len(set(args.seeds)) < 2:
        parser.error("a standard deviation needs at least two different seeds")
    logging.basicConfig(level=logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory() as home:
        for seed in args.seeds:
            data_seed = seed if args.data_seed is None else args.data_seed
            rows.append(measure(args.size, seed, data_seed, Path(home)))
            print(json.dumps(rows[-1]), flush=True)
    summary = summarise(rows)
    print(markdown(rows, summary))
    if args.out:
        args.out.write_text(json.dumps({"size": args.size, "rows": rows, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
