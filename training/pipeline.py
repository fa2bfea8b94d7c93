"""`recsys train`: dataset -> split -> LightFM -> CatBoost -> offline evaluation -> refit -> model store.

Three fits of the first level, each on exactly the data its purpose allows:
  A. history only: candidates and features as of the label window, to train the reranker on;
  B. history + labels: candidates and features as of the holdout window, to evaluate everything honestly;
  C. everything: what is served, so served candidates use all that is known.
A production retrain (`recsys train --no-eval`) leaves B and the evaluation out: C goes on from A.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.columns import Columns
from recsys.core import model_store
from recsys.core.candidates import CandidateModel, Mix
from recsys.core.reranker import FeatureAssembler, Reranker
from recsys.core.showcase import write_showcase
from recsys.data import synthetic
from recsys.data.registry import load_dataset
from recsys.data.schema import Dataset, before_window
from recsys.features.build import FeatureTables, build_feature_tables
from recsys.features.store import OnlineFeatureTable, write_feature_store
from recsys.progress import Timings
from recsys.settings import CandidateSettings, Settings
from recsys.training import spread
from recsys.training.baselines import EASE_GRID
from recsys.training.cache import StageCache, cache_key
from recsys.training.epochs import EpochSearch, LightFMState, epoch_cap
from recsys.training.evaluate import choose_ease_lambda, evaluate
from recsys.training.first_stage import ease_fits, fit_candidate_model, with_ease
from recsys.training.penalty import apply_penalty
from recsys.training.report import showcase_summary, write_plots, write_report
from recsys.training.second_stage import RankerFit, fit_ranker_on, label_rows
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


@dataclass
class FirstStage:
    """One fit of the first level: the feature tables as of its cut-off, the candidate model, how its epoch count
    was found (None: a fixed count) and the LightFM state a later fit on more data goes on from."""

    tables: FeatureTables
    model: CandidateModel
    epochs: EpochSearch | None
    state: LightFMState

    def save(self, directory: Path) -> None:
        self.model.save(directory / "candidates")
        self.tables.users.to_parquet(directory / "users.parquet", index=False)
        self.tables.items.to_parquet(directory / "items.parquet", index=False)
        self.state.save(directory / "lightfm.npz")
        (directory / "stage.json").write_text(json.dumps({
            "genres": self.tables.genres, "as_of": str(self.tables.as_of),
            "epochs": self.epochs.as_dict() if self.epochs else None}))

    @classmethod
    def load(cls, directory: Path, settings: Settings, seed: int, key: str) -> FirstStage:
        info = json.loads((directory / "stage.json").read_text())
        tables = FeatureTables(pd.read_parquet(directory / "users.parquet"), pd.read_parquet(directory / "items.parquet"),
                               info["genres"], pd.Timestamp(info["as_of"]))
        return cls(tables, CandidateModel.load(directory / "candidates"),
                   EpochSearch.from_dict(info["epochs"]) if info["epochs"] else None,
                   LightFMState.load(directory / "lightfm.npz", settings.lightfm, seed, key))


def _fit_first_stage(dataset: Dataset, known: pd.DataFrame, as_of: pd.Timestamp, settings: Settings, seed: int,
                     validation: pd.DataFrame | None = None, warm: LightFMState | None = None,
                     cache: StageCache | None = None, fingerprint: str = "", ease_l2: float | None = None,
                     window: pd.DataFrame | None = None) -> FirstStage:
    """Features and the first level as of ``as_of``; from ``cache`` when an earlier run fitted the same on the
    data with this ``fingerprint``. EASE's weights (L2 weight ``ease_l2``) join the model after the cache: they
    are a closed form of the model's own history, cheap up to ``candidates.ease_max_items``. The titles each user
    dismissed are those before ``as_of`` and before their first event in ``window`` (the one the fit predicts)."""

    def fit() -> FirstStage:
        dismissed = dataset.dismissed if window is None else before_window(dataset.dismissed, window)
        tables = build_feature_tables(known, dataset.users, dataset.items, as_of, dismissed)
        model, epochs, state = fit_candidate_model(known, dataset.users, dataset.items, as_of, settings.lightfm,
                                                   settings.candidates, seed=seed, validation=validation,
                                                   k=settings.eval.k, warm=warm, dismissed=dismissed)
        return FirstStage(tables, model, epochs, state)

    if cache is None:
        stage = fit()
    else:
        key = _first_stage_key(fingerprint, as_of, len(known), settings, seed, validation is not None, warm)
        stage = cache.cached("first-stage", key, fit, FirstStage.save,
                             lambda directory: FirstStage.load(directory, settings, seed, key))
        stage.state.key = key
        # a cached fit keeps the mix of the run that made it: the reranker trains on (and serving generates) this one's
        stage.model = replace(stage.model, mix=np.array(settings.candidates.mix, np.int64))
    stage.model = with_ease(stage.model, ease_l2, settings.candidates)
    return stage


# Candidate settings a first-level fit does not depend on: the mix (how many of each source) is drawn from the
# fitted model later, and EASE joins it after the cache (`with_ease`).
NOT_IN_FIT = {"n_popular", "n_cooc", "n_ease", "ease_max_items", "stored_lists"}  # used after the fit


def _first_stage_key(fingerprint: str, as_of: pd.Timestamp, known: int, settings: Settings, seed: int,
                     validated: bool, warm: LightFMState | None) -> str:
    """The cache key of a first-level fit: everything it is computed from."""
    # without `reproducible_up_to`, so the fits cached before it existed (two threads, at Kion's size still) stay found
    lightfm = settings.lightfm.model_dump(exclude={"reproducible_up_to"})
    return cache_key(fingerprint, str(as_of), known, settings.split.model_dump(), lightfm,
                     settings.candidates.model_dump(exclude=NOT_IN_FIT), settings.eval.k, seed, validated,
                     warm.key if warm is not None else None)


@dataclass
class LaterFit:
    """How a later fit (B on history + labels, C on everything) trains: ``settings`` with its epoch count, from
    ``warm``'s state, or from scratch when ``warm`` is None."""

    settings: Settings
    warm: LightFMState | None

    @property
    def label(self) -> str:
        epochs = self.settings.lightfm.epochs
        return f"{epochs} epochs on from the previous fit" if self.warm is not None else f"{epochs} epochs"


def _later_fit(settings: Settings, previous: LightFMState | None, epochs: EpochSearch | None) -> LaterFit:
    """``lightfm.warm_epochs`` epochs on from ``previous``'s state (a fit on more data needs only a few more
    passes: a fresh one took as long as the first); with 0, a fresh fit for the epoch count found on the
    validation window. No early stopping either way: the later fit has no window left to stop on."""
    if settings.lightfm.warm_epochs and previous is not None:
        warm = settings.lightfm.model_copy(update={"epochs": settings.lightfm.warm_epochs})
        return LaterFit(settings.model_copy(update={"lightfm": warm}), previous)
    return LaterFit(_with_epochs(settings, epochs), None)


@dataclass
class SeedRun:
    """Stages A and B with one model seed."""

    seed: int
    fit: RankerFit
    evaluation: dict[str, Any] | None  # None: not evaluated (`recsys train --no-eval`)
    served_fit: RankerFit | None  # the reranker served, when it learns from more windows than ``fit`` (first seed)
    epochs: EpochSearch | None  # how stage A's LightFM epoch count was found (None: fixed count)
    state: LightFMState | None  # stage B's LightFM (A's if not evaluated), the serving fit goes on from (first seed
    #                             only; then None)


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
    def evaluated(self) -> bool:
        return self.runs[0].evaluation is not None

    @property
    def evaluation(self) -> dict[str, Any]:
        """The first seed's offline evaluation; only a run made with ``evaluate_holdout`` has one."""
        return self.evaluations[0]

    @property
    def evaluations(self) -> list[dict[str, Any]]:
        """Each seed's offline evaluation (none without ``evaluate_holdout``)."""
        return [run.evaluation for run in self.runs if run.evaluation is not None]

    @property
    def epochs(self) -> EpochSearch | None:
        return self.runs[0].epochs


def fit_and_evaluate(dataset: Dataset, settings: Settings, timings: Timings | None = None,
                     seeds: list[int] | None = None,
                     after_first_stage: Callable[[EpochSearch | None], None] | None = None,
                     baselines: bool = True, cache: StageCache | None = None, evaluate_holdout: bool = True,
                     serve: bool = False) -> OfflineRun:
    """Stages A and B, once per model seed (default: the settings' one): the reranker and the offline metrics,
    without the serving refit or any saving.

    `train` runs it first; the tuner runs it on the data before the holdout window (its validation window is then
    the last one of that), and the quality tests and `scripts/quality_variance.py` run it alone, so they measure
    exactly what a training run reports. ``after_first_stage`` sees how stage A's LightFM scored on the label
    window (the tuner's pruner may stop there, before the reranker); without ``baselines``
    the EASE baseline is left out (the tuner only compares the two-stage model with LightFM alone). With a
    ``cache``, the first-level fits come from it when an earlier run made the same ones (`train` passes one).
    Without ``evaluate_holdout`` (a production retrain) stage B is left out: each run has no evaluation and keeps
    stage A's LightFM state for the serving fit to go on from.
    With ``serve`` (`train`) and ``ranker.served_windows`` 2, the first seed also fits the reranker to serve on both
    the label window (stage A's candidates) and the holdout window (stage B's, after the evaluation): twice the
    labels, the latest of them right before what is served predicts; the offline metrics stay those of stage A's.
    Without stage B (no ``evaluate_holdout``) the label window's reranker is served.

    EASE's L2 weight (``eval.ease_lambda``, or the best on the label window) is that of the baseline and of the
    candidate model's own EASE (a candidate source and reranker feature up to ``candidates.ease_max_items`` items):
    one EASE, compared with and built upon.
    """
    timings = Timings() if timings is None else timings
    seeds = [settings.data.seed] if seeds is None else seeds
    fingerprint = dataset.fingerprint() if cache is not None else ""
    with timings.step("split into history / labels / holdout"):
        split = split_interactions(dataset.interactions, settings.split, dataset.name)
    for name, window in split.report().items():
        log.info("  %-13s %s", name, window)

    runs: list[SeedRun] = []
    ease_lambda = settings.eval.ease_lambda
    ease_scores: dict[float, float] = {}
    for i, seed in enumerate(seeds):
        tag = f" [seed {seed}, {i + 1}/{len(seeds)}]" if len(seeds) > 1 else ""
        with timings.step(f"A. LightFM + features on history (reranker training data){tag}", f"A{i}"):
            a = _fit_first_stage(dataset, split.history, split.label_as_of, settings, seed, validation=split.labels,
                                 cache=cache, fingerprint=fingerprint, window=split.labels)
        if after_first_stage is not None:
            after_first_stage(a.epochs)
        if ease_lambda is None and (baselines or ease_fits(a.model, settings.candidates)):
            with timings.step("A. EASE's L2 weight on the label window", "ease"):  # the same for every seed
                ease_lambda, ease_scores = choose_ease_lambda(a.model, split.labels, settings.eval, seed)
        a.model = with_ease(a.model, ease_lambda, settings.candidates)
        with timings.step(f"A. CatBoost reranker on the label window{tag}", f"ranker{i}"):
            rows = label_rows(a.model, _assembler(a.tables, a.model), split.labels, settings.candidates,
                              settings.ranker, seed=seed)
            fit = fit_ranker_on([rows], settings.ranker, seed=seed)
        log.info("reranker: best iteration %d, scores %s", fit.best_iteration, fit.best_score)
        if not evaluate_holdout:
            runs.append(SeedRun(seed, fit, None, None, a.epochs, None if runs else a.state))
            continue
        # the label window's rows, kept for the served reranker (the first seed's, when `train` asks for it)
        rows_a = rows if serve and not runs and settings.ranker.served_windows == 2 else None
        del rows

        later = _later_fit(settings, a.state, a.epochs)
        epochs = a.epochs
        del a  # stage A's tables and model are done with: free them before B's
        with timings.step(f"B. LightFM ({later.label}) + features on history + labels (evaluation){tag}", f"B{i}"):
            b = _fit_first_stage(dataset, split.known_before_holdout, split.holdout_as_of, later.settings, seed,
                                 warm=later.warm, cache=cache, fingerprint=fingerprint, ease_l2=ease_lambda,
                                 window=split.holdout)
        del later
        reranker = Reranker(fit.model, _assembler(b.tables, b.model))
        with timings.step(f"B. the reranker's popularity penalty, on the label window's users{tag}", f"penalty{i}"):
            penalty = apply_penalty(reranker, b.model, split.labels, settings, settings.data.seed)
        with timings.step(f"B. offline evaluation on the holdout window{tag}", f"eval{i}"):
            evaluation = evaluate(b.model, reranker, split.holdout, settings.candidates, settings.eval,
                                  seed=settings.data.seed,  # same users
                                  threads=settings.ranker.threads, ease_lambda=ease_lambda if baselines else None)
        evaluation["popularity_penalty"] = penalty.as_dict()
        served_fit = None
        if rows_a is not None:
            with timings.step("B. CatBoost reranker served, on the label and holdout windows", "ranker-served"):
                rows_b = label_rows(b.model, _assembler(b.tables, b.model), split.holdout, settings.candidates,
                                    settings.ranker, seed=seed)
                served_fit = fit_ranker_on([rows_a, rows_b], settings.ranker, seed=seed)
            del rows_a, rows_b
        runs.append(SeedRun(seed, fit, evaluation, served_fit, epochs, None if runs else b.state))
        del b
    return OfflineRun(split, runs, ease_lambda, ease_scores)


def _served_epochs(settings: Settings, epochs: EpochSearch | None, warm_steps: int) -> int:
    """Epochs the served LightFM trained in all: fit A's count and ``warm_steps`` warm steps, or the count found."""
    found = epochs.best_epoch if epochs is not None else settings.lightfm.epochs
    return found + warm_steps * settings.lightfm.warm_epochs if settings.lightfm.warm_epochs else found


def _with_epochs(settings: Settings, epochs: EpochSearch | None) -> Settings:
    """The settings of a refit on more data: the epoch count found on the validation window, no early stopping
    (the refit has no window left to stop on)."""
    if epochs is None:
        return settings
    return settings.model_copy(update={"lightfm": settings.lightfm.model_copy(update={"epochs": epochs.best_epoch})})


# Seconds per unit of work on the 2-core machine, measured at a fifth of Kion's size: only for the log's estimate of
# the time left (which then follows the run's own pace), so rough is fine.
LIGHTFM_S = 1.2e-5    # per interaction and epoch on `lightfm.threads` (2) threads, features and validation included
RANKER_ROW_S = 5e-4   # per reranker training row
INVERSE_S = 3e-11     # per title cubed, one EASE inverse
EVAL_USER_S = 3e-3    # per evaluated user (candidates, four models, metrics)
PENALTY_USER_S = 1e-3  # per user the popularity penalty is chosen on (candidates, CatBoost, a dozen top-k)
SAVE_USER_S = 2e-5    # per user of the served model
STORED_USER_S = 1.5e-4  # per user of the served model, their stored LightFM and EASE lists


def _expected_seconds(dataset: Dataset, settings: Settings, seeds: int, evaluated: bool = True) -> dict[str, float]:
    """Each remaining step's expected cost (keys as `fit_and_evaluate` and `train` give them to their steps)."""
    lfm, n = settings.lightfm, len(dataset.interactions)
    # a fit small enough to be reproducible runs on one thread (`LightFMSettings.threads_for`): slower per interaction
    lightfm_s = LIGHTFM_S * lfm.threads / lfm.threads_for(int(0.8 * n))
    # early stopping: a typical stop (best step, then `patience` more) within the cap
    first = min(epoch_cap(lfm, int(0.8 * n)), lfm.eval_every * (lfm.patience + 4)) if lfm.early_stopping else lfm.epochs
    later = lfm.warm_epochs or first
    rows = settings.ranker.max_train_users * 0.4 * (settings.ranker.negatives_per_user + 1)
    items = min(len(dataset.items), settings.eval.ease_max_items)
    tuning = min(items, settings.eval.ease_tuning_items)
    users = min(settings.eval.max_users, dataset.interactions[Columns.User].nunique() // 10)
    # with EASE in the candidate model each first-level fit inverts once, and the evaluation reads its weights
    in_model = INVERSE_S * len(dataset.items) ** 3 if len(dataset.items) <= settings.candidates.ease_max_items else 0.0
    baseline = 0.0 if in_model else INVERSE_S * items ** 3
    plan: dict[str, float] = {}
    for i in range(seeds):
        plan |= {f"A{i}": lightfm_s * first * n + in_model, f"ranker{i}": RANKER_ROW_S * rows}
        if i == 0 and settings.eval.ease_lambda is None:
            plan["ease"] = INVERSE_S * len(EASE_GRID) * tuning ** 3
        if evaluated:
            plan |= {f"B{i}": lightfm_s * later * n + in_model, f"eval{i}": EVAL_USER_S * users + baseline,
                     f"penalty{i}": PENALTY_USER_S * users}
            if i == 0 and settings.ranker.served_windows == 2:
                plan["ranker-served"] = 2 * RANKER_ROW_S * rows
    if settings.candidates.stored_lists and len(dataset.items) < settings.candidates.ann_min_items:
        plan["stored"] = STORED_USER_S * len(dataset.users)
    return plan | {"C": lightfm_s * later * n + in_model, "penalty-served": PENALTY_USER_S * users,
                   "save": SAVE_USER_S * len(dataset.users)}


def _load_dataset(settings: Settings, cache: StageCache) -> Dataset:
    """The dataset; the built-in one from the cache when an earlier run generated it with the same generator."""
    if settings.data.dataset != "synthetic":
        return load_dataset(settings.data)
    key = cache_key(settings.data.size, settings.data.seed, synthetic.generator_version())
    return cache.cached("dataset", key, lambda: load_dataset(settings.data), Dataset.save, Dataset.load)


def train(settings: Settings, dataset: Dataset | None = None, seeds: int = 1,
          tuning: dict[str, Any] | None = None, evaluate_holdout: bool = True) -> TrainResult:
    """Train, evaluate with ``seeds`` model seeds (mean ± spread in the report; the first seed's models are served)
    and save the pair. ``tuning`` (what `recsys tune` wrote beside the parameters already applied to ``settings``)
    goes into both models' metadata and the report. Without ``evaluate_holdout`` (`recsys train --no-eval`, a
    production retrain of settings evaluated before) there is no evaluation fit and no offline metrics; the
    models' metadata says ``"evaluated": false``."""
    if seeds > 1 and not evaluate_holdout:
        raise ValueError("several model seeds are only there to measure the offline metrics' spread: with --no-eval "
                         "train with one")
    timings = Timings()
    started = time.time()
    cache = StageCache(settings.cache_dir if settings.cache else None, int(settings.cache_max_gb * 1e9),
                       on_hit=timings.from_cache)
    if dataset is None:
        with timings.step(f"load dataset '{settings.data.dataset}'"):
            dataset = _load_dataset(settings, cache)
    fingerprint = dataset.fingerprint()
    # microseconds: runs started together on the same data must not share a version (nor a report folder)
    run_id = f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S-%f}-{fingerprint[:6]}"
    log.info("run %s on %s", run_id, dataset.summary())
    timings.plan(_expected_seconds(dataset, settings, seeds, evaluate_holdout))
    offline = fit_and_evaluate(dataset, settings, timings, seeds=[settings.data.seed + i for i in range(seeds)],
                               baselines=evaluate_holdout, cache=cache, evaluate_holdout=evaluate_holdout, serve=True)
    split, evaluation = offline.split, offline.evaluation if offline.evaluated else None
    fit = offline.runs[0].served_fit or offline.fit

    serve_as_of = dataset.interactions[Columns.Datetime].max().normalize() + pd.Timedelta(days=1)
    later = _later_fit(settings, offline.runs[0].state, offline.epochs)
    offline.runs[0].state = None  # C holds the only reference now: freed with it
    with timings.step(f"C. refit LightFM ({later.label}) + features on all data (serving)", "C"):
        c = _fit_first_stage(dataset, dataset.interactions, serve_as_of, later.settings, settings.data.seed,
                             warm=later.warm, ease_l2=offline.ease_lambda)
    del later
    tables_c, model_c = c.tables, c.model
    with timings.step("C. the served reranker's popularity penalty, on the holdout window's users", "penalty-served"):
        served_penalty = apply_penalty(Reranker(fit.model, _assembler(tables_c, model_c)), model_c, split.holdout,
                                       settings, settings.data.seed)
    served_epochs = _served_epochs(settings, offline.epochs, warm_steps=2 if evaluate_holdout else 1)
    item_index = item_index_report(model_c, settings.candidates)
    if settings.candidates.stored_lists and model_c.index is None:
        with timings.step("C. every known user's LightFM and EASE lists, stored for serving", "stored"):
            model_c = model_c.with_stored_lists(model_c.served_mix(Mix(*settings.candidates.mix)))

    with timings.step("save both models to the BentoML model store", "save"), tempfile.TemporaryDirectory() as tmp:
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
            "lightfm_epochs": {"served": served_epochs, "warm_epochs": settings.lightfm.warm_epochs,
                               "early_stopping": offline.epochs.as_dict() if offline.epochs else None},
            "ease": {"l2": offline.ease_lambda, "in_candidate_model": model_c.has_ease,
                     "tuned_on_label_window": {f"{k:.4g}": v
                                                                          for k, v in offline.ease_scores.items()}},
            "evaluated": evaluation is not None,
            **(_offline_metadata(offline, settings.eval.k) if evaluation is not None else {}),
            "item_index": item_index,
            "stored_lists": dict(zip(("users", "n_lightfm", "n_ease"),
                                     (len(model_c.stored_lightfm), *model_c.stored_for.tolist()), strict=False)),
            "tuning": tuning,
            "libraries": {lib: package_version(lib) for lib in LIBRARIES},
            "training_seconds": round(time.time() - started, 1),
            "trained_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        report = {**metadata, "evaluation": evaluation or {"skipped": NOT_EVALUATED},
                  "ranker": {"rows": fit.train_rows, "train_users": fit.train_users, "valid_users": fit.valid_users,
                             "best_iteration": fit.best_iteration, "best_score": fit.best_score,
                             "importance": fit.importance, "popularity_penalty": served_penalty.as_dict(),
                             "label_windows": ["labels", "holdout"] if offline.runs[0].served_fit else ["labels"]}}
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


NOT_EVALUATED = "trained with `recsys train --no-eval`: no evaluation fit, no offline metrics"


def _offline_metadata(offline: OfflineRun, k: int) -> dict[str, Any]:
    """The offline metrics of an evaluated run, its spread over seeds and the candidates' recall."""
    evaluations = offline.evaluations
    return {"offline_metrics": offline.evaluation["metrics"],
            "offline_spread": {"seeds": [run.seed for run in offline.runs], "metrics": spread.summarise(evaluations),
                               "claims": spread.claims(evaluations, k)},
            "candidate_recall": offline.evaluation["candidate_recall"]}


def _without_none_keys(metadata: dict[str, Any]) -> dict[str, Any]:
    return {k: _without_none(v) for k, v in metadata.items() if v is not None}


def _without_none(value: object) -> object:
    """Metadata as BentoML stores it: it refuses None, so keys without a value are left out (readers use .get)."""
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value
