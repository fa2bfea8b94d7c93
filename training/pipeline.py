"""`recsys train`: dataset -> split -> LightFM -> CatBoost -> offline evaluation -> refit -> model store.

Three fits of the first level, each on exactly the data its purpose allows:
  A. history only: candidates and features as of the label window, to train the reranker on;
  B. history + labels: candidates and features as of the holdout window, to evaluate everything honestly;
  C. everything: what is served, so served candidates use all that is known.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import pandas as pd

from recsys.columns import Columns
from recsys.core import model_store
from recsys.core.candidates import CandidateModel
from recsys.core.reranker import FeatureAssembler, Reranker
from recsys.core.showcase import write_showcase
from recsys.data.registry import load_dataset
from recsys.data.schema import Dataset
from recsys.features.build import FeatureTables, build_feature_tables
from recsys.features.store import OnlineFeatureTable, write_feature_store
from recsys.progress import Timings
from recsys.settings import CandidateSettings, Settings
from recsys.training import spread
from recsys.training.epochs import EpochSearch
from recsys.training.evaluate import choose_ease_lambda, evaluate
from recsys.training.first_stage import ease_fits, fit_candidate_model, with_ease
from recsys.training.report import showcase_summary, write_plots, write_report
from recsys.training.second_stage import RankerFit, fit_ranker
from recsys.training.split import Split, split_interactions

log = logging.getLogger("recsys")
LIBRARIES = ["bentoml", "rectools-lightfm", "catboost", "faiss-cpu", "numpy", "pandas", "pyarrow", "scipy"]


@dataclass
class TrainResult:
    run_id: str
    tags: tuple[str, str]
    report: dict[str, Any]
    report_dir: Path


def _assembler(tables: FeatureTables, model: CandidateModel) -> FeatureAssembler:
    return FeatureAssembler(OnlineFeatureTable.from_frame(tables.users, Columns.User),
                            OnlineFeatureTable.from_frame(tables.items, Columns.Item), model.item_ids)


def _fit_first_stage(dataset: Dataset, known: pd.DataFrame, as_of: pd.Timestamp, settings: Settings, seed: int,
                     validation: pd.DataFrame | None = None,
                     ease_l2: float | None = None) -> tuple[FeatureTables, CandidateModel, EpochSearch | None]:
    tables = build_feature_tables(known, dataset.users, dataset.items, as_of)
    model, epochs = fit_candidate_model(known, dataset.users, dataset.items, as_of, settings.lightfm,
                                        settings.candidates, seed=seed, validation=validation, k=settings.eval.k)
    return tables, with_ease(model, ease_l2, settings.candidates), epochs


@dataclass
class SeedRun:
    """Stages A and B with one model seed."""

    seed: int
    fit: RankerFit
    evaluation: dict[str, Any]
    epochs: EpochSearch | None  # how stage A's LightFM epoch count was found (None: fixed count)


def item_index_report(model: CandidateModel, cands: CandidateSettings) -> dict[str, Any]:
    """How the LightFM top-n is found: every item scored below the size threshold; above it the index, with the
    recall@100 against exact search it was tuned to, measured on a sample of users."""
    if model.index is None:
        return {"kind": "exact", "items": len(model.item_ids), "ann_min_items": cands.ann_min_items}
    return {**model.index.describe(), "recall_users": min(cands.ann_recall_users, len(model.user_ids)),
            "target_recall": cands.ann_target_recall}


@dataclass
class OfflineRun:
    split: Split
    runs: list[SeedRun]          # the first one's reranker and epoch count are the ones served
    ease_lambda: float | None    # EASE's L2 weight, baseline and candidate source (None: EASE left out of both)
    ease_scores: dict[float, float]  # ndcg@k on the label window of every weight tried (empty: the weight was set)

    @property
    def fit(self) -> RankerFit:
        return self.runs[0].fit

    @property
    def evaluation(self) -> dict[str, Any]:
        return self.runs[0].evaluation

    @property
    def epochs(self) -> EpochSearch | None:
        return self.runs[0].epochs


def fit_and_evaluate(dataset: Dataset, settings: Settings, timings: Timings | None = None,
                     seeds: list[int] | None = None,
                     after_first_stage: Callable[[EpochSearch | None], None] | None = None,
                     baselines: bool = True) -> OfflineRun:
    """Stages A and B, once per model seed (default: the settings' one): the reranker and the offline metrics,
    without the serving refit or any saving.

    `train` runs it first; the tuner runs it on the data before the holdout window (its validation window is then
    the last one of that), and the quality tests and `scripts/quality_variance.py` run it alone, so they measure
    exactly what a training run reports. ``after_first_stage`` sees how stage A's LightFM scored on the label
    window (the tuner's pruner may stop there, before the reranker); without ``baselines``
    the EASE baseline is left out (the tuner only compares the two-stage model with LightFM alone).

    EASE's L2 weight (``eval.ease_lambda``, or the best on the label window) is that of the baseline and of the
    candidate model's own EASE (a candidate source and reranker feature up to ``candidates.ease_max_items`` items):
    one EASE, compared with and built upon.
    """
    timings = Timings() if timings is None else timings
    seeds = [settings.data.seed] if seeds is None else seeds
    with timings.step("split into history / labels / holdout"):
        split = split_interactions(dataset.interactions, settings.split, dataset.name)
    for name, window in split.report().items():
        log.info("  %-13s %s", name, window)

    runs: list[SeedRun] = []
    ease_lambda = settings.eval.ease_lambda
    ease_scores: dict[float, float] = {}
    for i, seed in enumerate(seeds):
        tag = f" [seed {seed}, {i + 1}/{len(seeds)}]" if len(seeds) > 1 else ""
        with timings.step(f"A. LightFM + features on history (reranker training data){tag}"):
            tables_a, model_a, epochs = _fit_first_stage(dataset, split.history, split.label_as_of, settings, seed,
                                                         validation=split.labels)
        if after_first_stage is not None:
            after_first_stage(epochs)
        if ease_lambda is None and (baselines or ease_fits(model_a, settings.candidates)):
            with timings.step("A. EASE's L2 weight on the label window"):  # the same for every seed
                ease_lambda, ease_scores = choose_ease_lambda(model_a, split.labels, settings.eval, seed)
        model_a = with_ease(model_a, ease_lambda, settings.candidates)
        with timings.step(f"A. CatBoost reranker on the label window{tag}"):
            fit = fit_ranker(model_a, _assembler(tables_a, model_a), split.labels, settings.candidates,
                             settings.ranker, seed=seed)
        log.info("reranker: best iteration %d, scores %s", fit.best_iteration, fit.best_score)

        refit = _with_epochs(settings, epochs)
        with timings.step(f"B. LightFM ({refit.lightfm.epochs} epochs) + features on history + labels "
                          f"(evaluation){tag}"):
            tables_b, model_b, _ = _fit_first_stage(dataset, split.known_before_holdout, split.holdout_as_of, refit,
                                                    seed, ease_l2=ease_lambda)
        with timings.step(f"B. offline evaluation on the holdout window{tag}"):
            evaluation = evaluate(model_b, Reranker(fit.model, _assembler(tables_b, model_b)), split.holdout,
                                  settings.candidates, settings.eval, seed=settings.data.seed,  # same users
                                  threads=settings.ranker.threads, ease_lambda=ease_lambda if baselines else None)
        runs.append(SeedRun(seed, fit, evaluation, epochs))
    return OfflineRun(split, runs, ease_lambda, ease_scores)


def _with_epochs(settings: Settings, epochs: EpochSearch | None) -> Settings:
    """The settings of a refit on more data: the epoch count found on the validation window, no early stopping
    (the refit has no window left to stop on)."""
    if epochs is None:
        return settings
    return settings.model_copy(update={"lightfm": settings.lightfm.model_copy(update={"epochs": epochs.best_epoch})})


def train(settings: Settings, dataset: Dataset | None = None, seeds: int = 1,
          tuning: dict[str, Any] | None = None) -> TrainResult:
    """Train, evaluate with ``seeds`` model seeds (mean ± spread in the report; the first seed's models are served)
    and save the pair. ``tuning`` (what `recsys tune` wrote beside the parameters already applied to ``settings``)
    goes into both models' metadata and the report."""
    timings = Timings()
    started = time.time()
    if dataset is None:
        with timings.step(f"load dataset '{settings.data.dataset}'"):
            dataset = load_dataset(settings.data)
    fingerprint = dataset.fingerprint()
    # microseconds: runs started together on the same data must not share a version (nor a report folder)
    run_id = f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S-%f}-{fingerprint[:6]}"
    log.info("run %s on %s", run_id, dataset.summary())
    offline = fit_and_evaluate(dataset, settings, timings,
                               seeds=[settings.data.seed + i for i in range(seeds)])
    split, fit, evaluation = offline.split, offline.fit, offline.evaluation
    evaluations = [run.evaluation for run in offline.runs]

    serve_as_of = dataset.interactions[Columns.Datetime].max().normalize() + pd.Timedelta(days=1)
    refit = _with_epochs(settings, offline.epochs)
    with timings.step(f"C. refit LightFM ({refit.lightfm.epochs} epochs) + features on all data (serving)"):
        tables_c, model_c, _ = _fit_first_stage(dataset, dataset.interactions, serve_as_of, refit, settings.data.seed,
                                                ease_l2=offline.ease_lambda)
    item_index = item_index_report(model_c, settings.candidates)

    with timings.step("save both models to the BentoML model store"), tempfile.TemporaryDirectory() as tmp:
        # the run's own snapshot, copied into its ranker: a shared folder let concurrent runs swap snapshots
        feature_dir = Path(tmp) / model_store.FEATURES_DIR
        manifest = write_feature_store(tables_c, feature_dir, fingerprint)
        ranker_file = Path(tmp) / model_store.RANKER_FILE
        fit.model.save_model(str(ranker_file), format="cbm")
        metadata = {
            "run_id": run_id,
            "dataset": dataset.name,
            "dataset_fingerprint": fingerprint,
            "dataset_summary": dataset.summary(),
            "feature_store_version": manifest["version"],
            "features_as_of": str(serve_as_of),
            "ranker_features": _assembler(tables_c, model_c).feature_names,
            "split": split.report(),
            "params": {"lightfm": settings.lightfm.model_dump(), "candidates": settings.candidates.model_dump(),
                       "ranker": settings.ranker.model_dump()},
            "lightfm_epochs": {"served": refit.lightfm.epochs,
                               "early_stopping": offline.epochs.as_dict() if offline.epochs else None},
            "ease": {"l2": offline.ease_lambda, "in_candidate_model": model_c.has_ease,
                     "tuned_on_label_window": {f"{k:.4g}": v
                                                                          for k, v in offline.ease_scores.items()}},
            "offline_metrics": evaluation["metrics"],
            "offline_spread": {"seeds": [run.seed for run in offline.runs], "metrics": spread.summarise(evaluations),
                               "claims": spread.claims(evaluations, settings.eval.k)},
            "candidate_recall": evaluation["candidate_recall"],
            "item_index": item_index,
            "tuning": tuning,
            "libraries": {lib: package_version(lib) for lib in LIBRARIES},
            "training_seconds": round(time.time() - started, 1),
            "trained_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        report = {**metadata, "evaluation": evaluation,
                  "ranker": {"rows": fit.train_rows, "train_users": fit.train_users, "valid_users": fit.valid_users,
                             "best_iteration": fit.best_iteration, "best_score": fit.best_score,
                             "importance": fit.importance}}
        showcase_dir = write_showcase(Path(tmp) / model_store.SHOWCASE_DIR, dataset, settings.ui.history_items,
                                      showcase_summary(report))
        write_plots(report, showcase_dir)
        labels = {"run_id": run_id, "dataset": dataset.name.replace("-", "_"), "project": "recsys"}
        tags = model_store.save_pair(run_id, model_c, ranker_file, feature_dir, showcase_dir, labels,
                                     _without_none_keys(metadata))

    report = {**report, "tags": list(tags), "timings": dict(timings)}
    report_dir = write_report(report, settings.reports_dir / run_id)
    log.info("timings:\n%s", timings.table())
    return TrainResult(run_id, tags, report, report_dir)


def _without_none_keys(metadata: dict[str, Any]) -> dict[str, Any]:
    return {k: _without_none(v) for k, v in metadata.items() if v is not None}


def _without_none(value: object) -> object:
    """Metadata as BentoML stores it: it refuses None, so keys without a value are left out (readers use .get)."""
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value
