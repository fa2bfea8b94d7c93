"""The reranked lists' popularity penalty: the smallest that keeps their coverage at a share of LightFM's.

A reranker learns from what users watched, and popular titles get watched: at Kion's size its top-10 lists showed
under half the titles LightFM's own lists did. A candidate is therefore ranked by CatBoost's score less ``penalty x
the percentile of the title's views in the catalogue`` (1 for the most watched title, 0 for the least), with the
smallest penalty at which the reranked top-k over a window's users show at least ``ranker.coverage_floor`` of the
titles LightFM's top-k show over the same users (once a penalty is needed, it aims ``ranker.penalty_headroom``
above the floor on these users, so the floor holds on others). Coverage needs no labels, so it is measured on the
model pair the penalty is for (the evaluated one, then the served one), over users of a window that pair has
already learnt from: never the holdout window's users for the evaluated pair. On the label window's validation users NDCG@10 fell
steadily as the penalty grew, and at equal coverage it fell less with the percentile than with log(1 + views), or
with a popularity-discounted training target (README, "Training at Kion's size"); so the smallest penalty that
meets the floor is also the most accurate one that does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from recsys.columns import Columns
from recsys.core.candidates import CandidateModel
from recsys.core.reranker import Reranker, set_popularity_penalty, top_k_per_user
from recsys.settings import Settings
from recsys.training.metrics import catalogue_coverage
from recsys.training.second_stage import generate_candidates

log = logging.getLogger(__name__)
DOUBLINGS = 16  # from a sixteenth of the scores' spread up: past that, a penalty has ranked by least popular
HALVINGS = 8    # then the smallest penalty is found to 1/256 of the bracket


@dataclass
class PenaltyChoice:
    penalty: float
    coverage: float              # coverage@k of the reranked lists with the penalty
    unpenalised_coverage: float  # without it
    lightfm_coverage: float      # of LightFM's own lists, over the same users
    floor: float                 # the share of LightFM's coverage asked for
    aimed: float                 # the share aimed at on these users: the floor plus ``ranker.penalty_headroom``
    users: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def choose_penalty(reranker: Reranker, model: CandidateModel, window: pd.DataFrame, settings: Settings,
                   seed: int) -> PenaltyChoice:
    """The smallest penalty at which ``reranker``'s top k over ``window``'s users that ``model`` knows (a seeded
    sample of at most ``eval.max_users``, as many as the offline evaluation scores) cover ``ranker.coverage_floor``
    x (1 + ``ranker.penalty_headroom``) x the titles LightFM's top k cover; 0 when they cover the floor without
    one. Found by doubling, then halving the bracket (coverage grows with the penalty)."""
    k, floor, max_users = settings.eval.k, settings.ranker.coverage_floor, settings.eval.max_users
    aimed = floor * (1 + settings.ranker.penalty_headroom)
    users = np.unique(window[Columns.User].to_numpy(np.int64))
    users = users[model.user_rows(users)[1]]
    if len(users) > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
    if floor == 0 or len(users) == 0:
        return PenaltyChoice(0.0, 0.0, 0.0, 0.0, floor, aimed, len(users))
    batch = generate_candidates(model, users, settings.candidates)
    raw = reranker.raw_score(users, batch, settings.ranker.threads)
    lfm = batch.take(batch.from_source("lightfm"))
    lightfm = _coverage(lfm.owner, lfm.items, lfm.column("lfm_score"), len(users), k, len(model.item_ids))

    def coverage(penalty: float) -> float:
        scores = reranker.penalised(raw, batch.items, penalty)
        return _coverage(batch.owner, batch.items, scores, len(users), k, len(model.item_ids))

    unpenalised = coverage(0.0)
    penalty, reached = 0.0, unpenalised
    if unpenalised < floor * lightfm:  # lists that meet the floor as they are keep their order
        penalty, reached = _smallest_reaching(coverage, aimed * lightfm, float(np.std(raw)) / 16 or 1.0)
    choice = PenaltyChoice(penalty, reached, unpenalised, lightfm, floor, aimed, len(users))
    log.info("popularity penalty %.4g: coverage@%d %.4f (%.4f without it) against LightFM's %.4f (floor %.0f%%, "
             "aimed at %.0f%%) over %d users", choice.penalty, k, choice.coverage, unpenalised, lightfm, 100 * floor,
             100 * aimed, len(users))
    return choice


def _smallest_reaching(coverage: Callable[[float], float], target: float, start: float) -> tuple[float, float]:
    """The smallest penalty whose ``coverage`` reaches ``target`` and that coverage: doubling from ``start``, then
    halving the bracket. When none does, the largest tried."""
    low, high = 0.0, start
    for _ in range(DOUBLINGS):
        reached = coverage(high)
        if reached >= target:
            break
        low, high = high, 2 * high
    else:
        log.warning("no popularity penalty up to %.3g reaches coverage %.4f (%.4f)", low, target, reached)
        return low, reached
    for _ in range(HALVINGS):
        middle = (low + high) / 2
        covered = coverage(middle)
        if covered >= target:
            high, reached = middle, covered
        else:
            low = middle
    return high, reached


def _coverage(owner: np.ndarray, items: np.ndarray, scores: np.ndarray, n_users: int, k: int, n_items: int) -> float:
    return catalogue_coverage(top_k_per_user(owner, items, scores, n_users, k)[0], n_items)


def apply_penalty(reranker: Reranker, model: CandidateModel, window: pd.DataFrame, settings: Settings,
                  seed: int) -> PenaltyChoice:
    """:func:`choose_penalty`, stored in the reranker's CatBoost model (every later load of it ranks with it:
    the saved file is what is served) and in ``reranker`` itself."""
    choice = choose_penalty(reranker, model, window, settings, seed)
    set_popularity_penalty(reranker.model, choice.penalty)
    reranker.penalty = choice.penalty
    return choice
