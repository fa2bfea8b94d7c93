"""`recsys tune`: a budgeted hyperparameter search over both stages and the candidate mix, with Optuna.

What a trial scores. The holdout window stays untouched: the search runs on the data before it, split again the
same way (`fit_and_evaluate` on that data), so each trial trains LightFM on the inner history (epochs by early
stopping on the inner label window), the reranker on the inner label window, refits LightFM on both and is scored on
the last window before the holdout, the validation window. Every fit is single-threaded and seeded with the run's
seed, so a trial's result depends on its parameters only: the same seed gives the same trials. EASE's L2 weight
(of the EASE in the candidate model) depends on the data alone: the first trial chooses it, the others reuse it.

The objective is the two-stage model's ndcg@k on the validation window, with a guard-rail on catalogue coverage:
a trial whose coverage@k falls below ``ranker.coverage_floor`` times LightFM alone's coverage@k on the same window has its
ndcg scaled down by the shortfall (ndcg x coverage / floor), and is never chosen while a trial above the floor
exists. A reranker that learns to push the same popular titles to everyone can gain a little ndcg while showing a
fraction of the catalogue; that trade is refused.

The search. Trial 0 is the current settings (so the search cannot end worse than them on validation), trials 1-2
configurations that won searches on other data (:data:`ANCHORS`), then a seeded TPE sampler (its random start-up
trials count the anchors). A trial is chosen over the earlier ones only when it beats them by more than
``TIE_MARGIN``: a smaller lead is within what a model seed moves one configuration, and the more trials a search
runs, the likelier one of them wins such a tie by luck, so without the margin a search's choice would depend on how
many trials the machine's load let it run. A percentile pruner reads LightFM alone's ndcg@k on the inner label
window once its epochs are found, and abandons a trial whose first stage is in the bottom tenth of the completed
trials' (after eight of them): the reranker and the refit, most of a trial's time, are then skipped. It is
deliberately lenient, the first stage being only a proxy (the reranker makes up for a lot), and it stands down
where it would have pruned the best trial so far (see :func:`should_prune`). The search stops at ``max_trials`` or
when the next trial would not end within the budget.

Parallel trials that stay deterministic. ``jobs`` trials run at once, in threads (LightFM's epochs and CatBoost's
training release the GIL, and each is single-threaded, so two trials use two cores). They are asked for together,
in batches: every trial of a batch is sampled from the trials completed before it, and pruned against those only
(the batch's results are told to the study after the whole batch), so which trials run, and what each scores,
depends on the seed and ``jobs`` only, never on which thread finished first. The price is the wait for a batch's
slowest trial, and that TPE learns from a batch only after it. One at a time is the default: on the shared machine
(load average 10-14) two at once ran four tiny trials in 151 s instead of 300 s, but the MovieLens-100k-shaped
search got 6 trials into its 7 minutes instead of 20 (its pairs were slower than two single trials, and the
pruner, which waits for 8 completed trials, started later).
Which parameters mattered is Optuna's fANOVA importance over the completed trials.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import optuna

from recsys.columns import Columns
from recsys.data.schema import Dataset, before_window
from recsys.settings import Settings
from recsys.training.epochs import EpochSearch
from recsys.training.params import apply_params
from recsys.training.pipeline import fit_and_evaluate
from recsys.training.second_stage import RankerTrainingError
from recsys.training.split import split_interactions

log = logging.getLogger("recsys.tune")
STARTUP_TRIALS = 8     # random trials before TPE models the results
PRUNE_PERCENTILE = 10.0
PRUNE_STARTUP_TRIALS = 8
JOBS = 1               # trials at once (the trials depend on it, not on the machine); see "Parallel trials" above
# A trial must beat the earlier ones (the settings, the anchors, earlier samples) by this share of the objective to be
# chosen over them. One configuration's validation objective moves by about this much between model seeds
# (MovieLens-shaped data: see README, "The search"), so a smaller lead is a tie, which a longer search's extra trials
# would otherwise win by luck.
TIE_MARGIN = 0.02
QUIET_LOGGERS = ("recsys",)  # the pipeline's step logs (recsys.training.*), per trial, would drown the search's own


@dataclass(frozen=True)
class Param:
    """One searched setting: ``section.name`` and its range (``log`` for scale parameters) or choices."""

    section: str
    name: str
    low: int | float | None = None  # int bounds: an integer setting
    high: int | float | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None

    @property
    def key(self) -> str:
        return f"{self.section}.{self.name}"

    def suggest(self, trial: optuna.Trial) -> object:
        if self.choices is not None:
            return trial.suggest_categorical(self.key, self.choices)
        low, high = self._range()
        if isinstance(low, int) and isinstance(high, int):
            return trial.suggest_int(self.key, low, high, log=self.log)
        return trial.suggest_float(self.key, low, high, log=self.log)

    def _range(self) -> tuple[int | float, int | float]:
        if self.low is None or self.high is None:
            raise ValueError(f"{self.key}: a searched setting needs low and high, or choices")
        return self.low, self.high

    def clip(self, value: Any) -> object:
        """A current setting as a value of this range (LightFM's default regularisation 0 is below a log range)."""
        if self.choices is not None:
            return value if value in self.choices else self.choices[0]
        low, high = self._range()
        return type(low)(min(max(value, low), high))

    def describe(self) -> str:
        if self.choices is not None:
            return " | ".join(map(str, self.choices))
        return f"{self.low:g} .. {self.high:g}" + (" (log)" if self.log else "")


# Ranges centred on what won searches on the built-in data and on MovieLens-shaped data, not the widest that runs:
# a search of MovieLens-100k's size completes 10-15 trials in the default budget, most of them TPE's random start-up
# ones, so the range is what decides what a search can find. Left out as never competitive there: LightFM's bpr
# (it optimises AUC, not the top of the list: the weakest LightFM of every search), learning rates past 0.2 (8-10
# epochs, then worse) or below 0.02 (slow), a first level without EASE's candidates, trees deeper than 8.
SPACE = (
    Param("lightfm", "no_components", 24, 160, log=True),
    Param("lightfm", "learning_rate", 0.02, 0.2, log=True),
    Param("lightfm", "loss", choices=("warp", "warp-kos")),
    Param("lightfm", "item_alpha", 1e-9, 1e-5, log=True),
    Param("lightfm", "user_alpha", 1e-9, 1e-5, log=True),
    Param("lightfm", "use_features", choices=(True, False)),
    Param("candidates", "n_lightfm", 30, 300, log=True),
    Param("candidates", "n_popular", 0, 60),
    Param("candidates", "n_cooc", 0, 80),
    Param("candidates", "n_ease", 20, 200),
    Param("ranker", "loss", choices=("YetiRank", "PairLogit", "Logloss")),
    Param("ranker", "popularity_debias", 0.0, 0.6),
    Param("ranker", "depth", 3, 8),
    Param("ranker", "iterations", 150, 800, log=True),
    Param("ranker", "learning_rate", 0.03, 0.2, log=True),
)
# The first trials, before the sampler's: each one the current settings with these values. The first is the settings
# as they are (the search cannot end worse than them on validation); the others are configurations that won earlier
# searches on other data, so a short search starts from several good points instead of one and random ones: on
# MovieLens-shaped data (943 users, a label window of ~4,000 items) a shallow pointwise reranker over many EASE
# candidates (`recsys tune` there, twice: Logloss, depth 3-4, 71-151 EASE candidates, LightFM without features;
# a third search chose Logloss too), and the built-in `small` data's (warp with features, 77 components, a depth-3
# YetiRank).
ANCHORS: tuple[dict[str, object], ...] = (
    {},
    {"lightfm.use_features": False, "lightfm.no_components": 60, "candidates.n_lightfm": 230,
     "candidates.n_popular": 25, "candidates.n_cooc": 40, "candidates.n_ease": 150, "ranker.loss": "Logloss",
     "ranker.depth": 4, "ranker.iterations": 400, "ranker.learning_rate": 0.05},
    {"lightfm.no_components": 77, "lightfm.learning_rate": 0.19, "candidates.n_lightfm": 225,
     "candidates.n_popular": 10, "candidates.n_cooc": 80, "candidates.n_ease": 100, "ranker.depth": 3},
)


def as_sections(flat: dict[str, object]) -> dict[str, dict[str, Any]]:
    """``{"lightfm.loss": "warp"}`` -> ``{"lightfm": {"loss": "warp"}}``: the shape `apply_params` takes."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        section, name = key.split(".", 1)
        out.setdefault(section, {})[name] = value
    return out


def current_values(settings: Settings) -> dict[str, object]:
    return {p.key: p.clip(getattr(getattr(settings, p.section), p.name)) for p in SPACE}


def anchor_values(settings: Settings) -> list[dict[str, object]]:
    """The first trials' values: the current settings with each of :data:`ANCHORS` over them, in the ranges."""
    params = {p.key: p for p in SPACE}
    return [current_values(settings) | {key: params[key].clip(value) for key, value in anchor.items()}
            for anchor in ANCHORS]


@dataclass
class TuneResult:
    params: dict[str, dict[str, Any]]  # the best trial's values, by section
    tuning: dict[str, Any]             # the search: objective, budget, every trial, the best one, importance


def validation_data(dataset: Dataset, settings: Settings) -> tuple[Dataset, dict[str, Any]]:
    """The data before the holdout window (what a trial may see) and its own split's windows, for the record."""
    outer = split_interactions(dataset.interactions, settings.split, dataset.name)
    before = replace(dataset, interactions=outer.known_before_holdout.sort_values(Columns.Datetime, kind="stable"),
                     dismissed=before_window(dataset.dismissed, outer.holdout))
    inner = split_interactions(before.interactions, settings.split, dataset.name)
    return before, {"holdout_untouched": outer.report()["holdout"], "trials_split": inner.report()}


class _Objective:
    def __init__(self, dataset: Dataset, settings: Settings, seed: int) -> None:
        self.dataset, self.settings, self.seed, self.k = dataset, settings, seed, settings.eval.k

    def __call__(self, trial: optuna.Trial) -> float:
        settings = apply_params(self.settings, as_sections({p.key: p.suggest(trial) for p in SPACE}))
        started = time.perf_counter()

        def prune_on(epochs: EpochSearch | None) -> None:
            if epochs is None:  # early stopping off: nothing measured before the reranker
                return
            ndcg = epochs.scores[epochs.best_epoch][f"ndcg@{self.k}"]
            trial.report(ndcg, step=0)
            if should_prune(trial):
                trial.set_user_attr("seconds", round(time.perf_counter() - started, 1))
                raise optuna.TrialPruned(f"LightFM ndcg@{self.k} {ndcg:.4f} in the bottom {PRUNE_PERCENTILE:g}%")

        run = fit_and_evaluate(self.dataset, settings, seeds=[self.seed], after_first_stage=prune_on, baselines=False)
        if self.settings.eval.ease_lambda is None and run.ease_lambda is not None:
            # EASE's weight depends on the data only (history and label window), not on the trial: found once
            self.settings = self.settings.model_copy(update={
                "eval": self.settings.eval.model_copy(update={"ease_lambda": run.ease_lambda})})
        metrics = run.evaluation["metrics"]
        ndcg, coverage = metrics["two_stage"][f"ndcg@{self.k}"], metrics["two_stage"][f"coverage@{self.k}"]
        floor = self.settings.ranker.coverage_floor * metrics["lightfm"][f"coverage@{self.k}"]
        value = objective_value(ndcg, coverage, floor)
        trial.set_user_attr("ndcg", ndcg)
        trial.set_user_attr("coverage", coverage)
        trial.set_user_attr("coverage_floor", floor)
        trial.set_user_attr("lightfm_ndcg", metrics["lightfm"][f"ndcg@{self.k}"])
        trial.set_user_attr("epochs", run.epochs.best_epoch if run.epochs else settings.lightfm.epochs)
        trial.set_user_attr("seconds", round(time.perf_counter() - started, 1))
        return value


def objective_value(ndcg: float, coverage: float, floor: float) -> float:
    """ndcg, scaled down by the shortfall when coverage is below the floor (LightFM alone's, halved)."""
    return ndcg * min(1.0, coverage / floor) if floor > 0 else ndcg


def should_prune(trial: optuna.Trial) -> bool:
    """The percentile pruner's verdict on ``trial``'s first stage, unless it would have pruned the best completed
    trial too: where the best two-stage trials build on a weak LightFM (on MovieLens-shaped data EASE carries them),
    LightFM alone says nothing about the objective and pruning by it only discards the trials TPE proposes."""
    if not trial.should_prune():
        return False
    complete = trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    first_stage = [t.intermediate_values[0] for t in complete if 0 in t.intermediate_values]
    best = best_trial(trial.study)
    return 0 not in best.intermediate_values or \
        best.intermediate_values[0] > float(np.percentile(first_stage, PRUNE_PERCENTILE))


def _feasible(trial: optuna.trial.FrozenTrial) -> bool:
    return trial.user_attrs["coverage"] >= trial.user_attrs["coverage_floor"]


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    """The first completed trial within ``TIE_MARGIN`` of the best objective, among those above the coverage floor
    (or among all completed if none is). The trials come in the order of their prior: the current settings, the
    anchors, then the sampler's; a lead smaller than the margin is a tie on one validation window (a model seed moves
    one configuration's objective as much), and a later trial wins a tie by luck as often as on merit."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        raise RankerTrainingError("no tuning trial completed; see the errors above, or raise --budget / --trials")
    feasible = [t for t in complete if _feasible(t)] or complete
    best = max(float(t.value or 0) for t in feasible)
    return min((t for t in feasible if float(t.value or 0) >= best * (1 - TIE_MARGIN)), key=lambda t: t.number)


class _Progress:
    """After each trial: one line with its result, the best so far, and the time used and left of the budget; sets
    ``stopped`` when the next batch of ``jobs`` trials would likely not end within the budget."""

    def __init__(self, budget_s: float, max_trials: int, jobs: int) -> None:
        self.budget_s, self.max_trials, self.jobs, self.started = budget_s, max_trials, jobs, time.perf_counter()
        self.stopped = False

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        done = sum(t.state.is_finished() for t in study.trials)  # a batch's later trials are still running
        elapsed = self.elapsed()
        # wall time per trial so far: pruned trials are short, and as likely next time; parallel ones overlap
        typical = elapsed / max(done, 1)
        batches = math.floor((self.budget_s - elapsed) / (typical * self.jobs))
        left = max(0, min(self.max_trials - done, batches * self.jobs))
        state = trial.state.name.lower()
        if trial.state == optuna.trial.TrialState.COMPLETE:
            a = trial.user_attrs
            result = (f"objective {trial.value:.4f} (ndcg {a['ndcg']:.4f}, coverage {a['coverage']:.3f} vs floor "
                      f"{a['coverage_floor']:.3f}, LightFM {a['epochs']} epochs)")
        elif trial.state == optuna.trial.TrialState.PRUNED:
            result = f"pruned: its LightFM was in the bottom {PRUNE_PERCENTILE:g}%"
        else:
            result = "failed (the error is logged above)"
        best = ""
        if any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
            b = best_trial(study)
            best = f"; best {b.value:.4f} (trial {b.number})"
        log.info("trial %d (%d/%d) %s in %.0fs: %s%s; %.0fs of the %.0fs budget used, about %d more trial(s), "
                 "ETA %.0fs", trial.number, done, self.max_trials, state,
                 trial.duration.total_seconds() if trial.duration else 0, result,
                 best, elapsed, self.budget_s, left, left * typical)
        self.stopped = self.stopped or left == 0


def _attempt(objective: _Objective) -> Callable[[optuna.Trial], tuple[optuna.trial.TrialState, float | None]]:
    """One trial's outcome as Optuna records it (the study is told in the main thread, in trial order)."""
    def run(trial: optuna.Trial) -> tuple[optuna.trial.TrialState, float | None]:
        try:
            return optuna.trial.TrialState.COMPLETE, objective(trial)
        except optuna.TrialPruned:
            return optuna.trial.TrialState.PRUNED, None
        except RankerTrainingError as exc:
            log.warning("trial %d failed: %s", trial.number, exc)
            return optuna.trial.TrialState.FAIL, None
    return run


def _search(study: optuna.Study, objective: _Objective, jobs: int, max_trials: int, progress: _Progress) -> None:
    """Batches of ``jobs`` trials, each batch asked for before any of it runs and told after all of it ran."""
    with ThreadPoolExecutor(jobs, thread_name_prefix="trial") as pool:
        while len(study.trials) < max_trials and not progress.stopped:
            batch = [study.ask() for _ in range(min(jobs, max_trials - len(study.trials)))]
            for trial, (state, value) in zip(batch, pool.map(_attempt(objective), batch), strict=True):
                study.tell(trial, value, state=state)
                progress(study, study.trials[trial.number])


def new_study(seed: int) -> optuna.Study:
    """A study with the seeded TPE sampler and the pruner. Optuna's ``PercentilePruner(p)`` keeps the *top* p% of a
    maximised value, so the bottom ``PRUNE_PERCENTILE`` is pruned by ``100 - PRUNE_PERCENTILE`` (before 2026-12-02
    it was given 10 and pruned all but the top tenth: 7 of the 8 trials TPE proposed on MovieLens-shaped data)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=STARTUP_TRIALS, multivariate=True)
    pruner = optuna.pruners.PercentilePruner(100 - PRUNE_PERCENTILE, n_startup_trials=PRUNE_STARTUP_TRIALS)
    return optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)


def tune(dataset: Dataset, settings: Settings, budget_s: float, max_trials: int, jobs: int = JOBS) -> TuneResult:
    """Search for ``budget_s`` seconds or ``max_trials`` trials (whichever ends first) with the settings' seed,
    ``jobs`` trials at once."""
    seed = settings.data.seed
    before, windows = validation_data(dataset, settings)
    base = settings.single_threaded()
    log.info("tuning on %s: at most %d trials in %.0fs, %d at once; validation window %s (the holdout window %s is "
             "not used)", dataset.name, max_trials, budget_s, jobs, windows["trials_split"]["holdout"],
             windows["holdout_untouched"])
    log.info("search space: %s", "; ".join(f"{p.key} {p.describe()}" for p in SPACE))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = new_study(seed)
    for values in anchor_values(base):
        study.enqueue_trial(values)
    progress = _Progress(budget_s, max_trials, jobs)
    quiet = {name: logging.getLogger(name).level for name in (*QUIET_LOGGERS, log.name)}
    try:
        log.setLevel(log.getEffectiveLevel())  # before its parent is quietened
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        _search(study, _Objective(before, base, seed), jobs, max_trials, progress)
    finally:
        for name, level in quiet.items():
            logging.getLogger(name).setLevel(level)
    best = best_trial(study)
    importance, method = param_importance(study, seed)
    log.info("best trial %d: objective %.4f with %s", best.number, best.value,
             ", ".join(f"{k}={_plain(v)}" for k, v in best.params.items()))
    if importance:
        log.info("what mattered (%s): %s", method, ", ".join(f"{k} {v:.2f}" for k, v in importance.items()))
    k = settings.eval.k
    tuning = {
        "dataset": dataset.name,
        "dataset_fingerprint": dataset.fingerprint(),
        "seed": seed,
        "objective": (f"ndcg@{k} of LightFM + CatBoost on the validation window, x min(1, "
                      f"coverage@{k} / ({settings.ranker.coverage_floor:g} x LightFM alone's coverage@{k}))"),
        "coverage_floor": settings.ranker.coverage_floor,
        "windows": windows,
        "space": {p.key: p.describe() for p in SPACE},
        "budget_s": budget_s,
        "max_trials": max_trials,
        "jobs": jobs,
        "elapsed_s": round(progress.elapsed(), 1),
        "best_trial": best.number,
        "best_value": best.value,
        "best_params": {k: _plain(v) for k, v in best.params.items()},
        "importance": importance,
        "importance_method": method,
        "trials": [_trial_record(t) for t in study.trials],
    }
    return TuneResult(as_sections({k: _plain(v) for k, v in best.params.items()}), tuning)


def param_importance(study: optuna.Study, seed: int) -> tuple[dict[str, float], str]:
    """fANOVA importance of each parameter for the objective (shares summing to 1), over the completed trials;
    empty when fewer than two completed or they all scored the same."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 2 or len({t.value for t in complete}) < 2:
        return {}, "not enough completed trials that differ"
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
    importance = optuna.importance.get_param_importances(study, evaluator=evaluator)
    return {k: float(v) for k, v in importance.items()}, f"fANOVA over {len(complete)} completed trials"


def _plain(value: object) -> object:
    return value.item() if hasattr(value, "item") else value


def _trial_record(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """A trial as the parameters file keeps it. A pruned trial has no objective (Optuna gives it the last value it
    reported, LightFM's ndcg, which is kept under its own name)."""
    complete = trial.state == optuna.trial.TrialState.COMPLETE
    return {"number": trial.number, "state": trial.state.name.lower(), "value": trial.value if complete else None,
            "params": {k: _plain(v) for k, v in trial.params.items()},
            **{k: trial.user_attrs[k] for k in ("ndcg", "coverage", "coverage_floor", "lightfm_ndcg", "epochs",
                                                 "seconds") if k in trial.user_attrs},
            "lightfm_ndcg_at_prune": trial.intermediate_values.get(0)
            if trial.state == optuna.trial.TrialState.PRUNED else None}
