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
from recsys.settings import Settings
from recsys.training.evaluate import evaluate
from recsys.training.first_stage import fit_candidate_model
from recsys.training.report import showcase_summary, write_plots, write_report
from recsys.training.second_stage import RankerFit, fit_ranker
from recsys.training.split import Split, split_interactions

log = logging.getLogger("recsys")
LIBRARIES = ["bentoml", "rectools-lightfm", "catboost", "numpy", "pandas", "pyarrow", "scipy"]


@dataclass
class TrainResult:
    run_id: str
    tags: tuple[str, str]
    report: dict[str, Any]
    report_dir: Path


def _assembler(tables: FeatureTables, model: CandidateModel) -> FeatureAssembler:
    return FeatureAssembler(OnlineFeatureTable.from_frame(tables.users, Columns.User),
                            OnlineFeatureTable.from_frame(tables.items, Columns.Item), model.item_ids)


def _fit_first_stage(dataset: Dataset, known: pd.DataFrame, as_of: pd.Timestamp,
                     settings: Settings) -> tuple[FeatureTables, CandidateModel]:
    tables = build_feature_tables(known, dataset.users, dataset.items, as_of)
    model = fit_candidate_model(known, dataset.users, dataset.items, as_of, settings.lightfm, settings.candidates,
                                seed=settings.data.seed)
    return tables, model


@dataclass
class OfflineRun:
    split: Split
    fit: RankerFit
    evaluation: dict[str, Any]


def fit_and_evaluate(dataset: Dataset, settings: Settings, timings: Timings | None = None) -> OfflineRun:
    """Stages A and B: the reranker and the offline metrics, without the serving refit or any saving.

    `train` runs it first; the quality tests and `scripts/quality_variance.py` run it alone, so they measure
    exactly what a training run reports.
    """
    timings = Timings() if timings is None else timings
    with timings.step("split into history / labels / holdout"):
        split = split_interactions(dataset.interactions, settings.split, dataset.name)
    for name, window in split.report().items():
        log.info("  %-13s %s", name, window)

    with timings.step("A. LightFM + features on history (reranker training data)"):
        tables_a, model_a = _fit_first_stage(dataset, split.history, split.label_as_of, settings)
    with timings.step("A. CatBoost reranker on the label window"):
        fit = fit_ranker(model_a, _assembler(tables_a, model_a), split.labels, settings.candidates,
                         settings.ranker, seed=settings.data.seed)
    log.info("reranker: best iteration %d, scores %s", fit.best_iteration, fit.best_score)

    with timings.step("B. LightFM + features on history + labels (evaluation)"):
        tables_b, model_b = _fit_first_stage(dataset, split.known_before_holdout, split.holdout_as_of, settings)
    with timings.step("B. offline evaluation on the holdout window"):
        evaluation = evaluate(model_b, Reranker(fit.model, _assembler(tables_b, model_b)), split.holdout,
                              settings.candidates, settings.eval, seed=settings.data.seed,
                              threads=settings.ranker.threads)
    return OfflineRun(split, fit, evaluation)


def train(settings: Settings, dataset: Dataset | None = None) -> TrainResult:
    timings = Timings()
    started = time.time()
    if dataset is None:
        with timings.step(f"load dataset '{settings.data.dataset}'"):
            dataset = load_dataset(settings.data)
    fingerprint = dataset.fingerprint()
    # microseconds: runs started together on the same data must not share a version (nor a report folder)
    run_id = f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S-%f}-{fingerprint[:6]}"
    log.info("run %s on %s", run_id, dataset.summary())
    offline = fit_and_evaluate(dataset, settings, timings)
    split, fit, evaluation = offline.split, offline.fit, offline.evaluation

    serve_as_of = dataset.interactions[Columns.Datetime].max().normalize() + pd.Timedelta(days=1)
    with timings.step("C. refit LightFM + features on all data (serving)"):
        tables_c, model_c = _fit_first_stage(dataset, dataset.interactions, serve_as_of, settings)

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
            "offline_metrics": evaluation["metrics"],
            "candidate_recall": evaluation["candidate_recall"],
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
        tags = model_store.save_pair(run_id, model_c, ranker_file, feature_dir, showcase_dir, labels, metadata)

    report = {**report, "tags": list(tags), "timings": dict(timings)}
    report_dir = write_report(report, settings.reports_dir / run_id)
    log.info("timings:\n%s", timings.table())
    return TrainResult(run_id, tags, report, report_dir)
