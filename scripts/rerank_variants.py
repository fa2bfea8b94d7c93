"""Measure reranker variants on one pair of first-level fits: what moves the two-stage model's NDCG and coverage.

Stages A and B come from the cache of finished stages (``settings.cache_dir``, as `recsys train` left it; a miss
fits them), EASE joins both with the L2 weight chosen on the label window, and then, for every variant (settings
overrides as JSON, e.g. ``'{"ranker": {"popularity_debias": 0.5}}'``) and every CatBoost seed, the reranker is
trained on the label window, its popularity penalty chosen on the label window's users with the evaluation fit
(``ranker.coverage_floor``), and every model scored on the holdout window, as `recsys train` does. LightFM and
EASE are the same model in every row, so the rows differ only by the reranker (and the candidate mix, if a
variant sets one). One JSON line per row; README "Training at Kion's size" has the table it made.

    .venv/bin/python scripts/rerank_variants.py --size kion --seeds 42 43 -- '{}' '{"ranker": {"max_train_users": 60000}}'
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recsys.core.reranker import Reranker  # noqa: E402
from recsys.settings import Settings  # noqa: E402
from recsys.training import pipeline  # noqa: E402
from recsys.training.cache import StageCache  # noqa: E402
from recsys.training.evaluate import choose_ease_lambda, evaluate  # noqa: E402
from recsys.training.penalty import apply_penalty  # noqa: E402
from recsys.training.second_stage import fit_ranker  # noqa: E402
from recsys.training.split import split_interactions  # noqa: E402


def with_overrides(settings: Settings, overrides: dict[str, dict[str, Any]]) -> Settings:
    return settings.model_copy(update={section: getattr(settings, section).model_copy(update=values)
                                       for section, values in overrides.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="kion", help="size of the built-in dataset")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42], help="CatBoost seeds per variant")
    parser.add_argument("variants", nargs="+", help="settings overrides as JSON, one variant each")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")

    settings = Settings(data={"dataset": "synthetic", "size": args.size})
    cache = StageCache(settings.cache_dir)
    dataset = pipeline._load_dataset(settings, cache)
    fingerprint, seed = dataset.fingerprint(), settings.data.seed
    split = split_interactions(dataset.interactions, settings.split, dataset.name)
    a = pipeline._fit_first_stage(dataset, split.history, split.label_as_of, settings, seed, validation=split.labels,
                                  cache=cache, fingerprint=fingerprint, window=split.labels)
    l2 = settings.eval.ease_lambda or choose_ease_lambda(a.model, split.labels, settings.eval, seed)[0]
    a.model = pipeline.with_ease(a.model, l2, settings.candidates)
    later = pipeline._later_fit(settings, a.state, a.epochs)
    b = pipeline._fit_first_stage(dataset, split.known_before_holdout, split.holdout_as_of, later.settings, seed,
                                  warm=later.warm, cache=cache, fingerprint=fingerprint, ease_l2=l2,
                                  window=split.holdout)
    for variant in args.variants:
        overrides = json.loads(variant)
        run = with_overrides(settings, overrides)
        for ranker_seed in args.seeds:
            started = time.perf_counter()
            fit = fit_ranker(a.model, pipeline._assembler(a.tables, a.model), split.labels, run.candidates,
                             run.ranker, seed=ranker_seed)
            reranker = Reranker(fit.model, pipeline._assembler(b.tables, b.model))
            penalty = apply_penalty(reranker, b.model, split.labels, run, seed)
            metrics = evaluate(b.model, reranker, split.holdout, run.candidates, run.eval, seed=seed,
                               threads=run.ranker.threads, ease_lambda=l2)["metrics"]
            print(json.dumps({
                "variant": overrides, "catboost_seed": ranker_seed, "seconds": round(time.perf_counter() - started),
                "penalty": round(penalty.penalty, 4),
                "chosen_coverage_share": round(penalty.coverage / max(penalty.lightfm_coverage, 1e-9), 3),
                "rows": fit.train_rows, "train_users": fit.train_users, "best_iteration": fit.best_iteration,
                **{f"{model} {name}": round(values[name], 4) for model, values in metrics.items()
                   for name in ("ndcg@10", "coverage@10")},
                "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)}), flush=True)


if __name__ == "__main__":
    main()
