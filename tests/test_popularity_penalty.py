"""The reranked lists' popularity penalty (``ranker.coverage_floor``): the smallest at which the two-stage top-k
show the asked share of the titles LightFM's show, chosen on users of a window the pair has learnt from (never the
holdout's), stored in the CatBoost model that is evaluated and saved, so serving ranks as the evaluation did."""

from __future__ import annotations

import json

import pytest

from recsys.core.reranker import load_catboost, popularity_penalty
from recsys.settings import Settings
from recsys.training.pipeline import fit_and_evaluate


def _run(tiny, tmp_path, floor: float):
    settings = Settings(home=tmp_path, cache=False, data={"dataset": "synthetic", "size": "tiny", "seed": 7},
                        ranker={"popularity_debias": 0.0, "coverage_floor": floor}).single_threaded()
    return fit_and_evaluate(tiny, settings, baselines=False)


@pytest.fixture(scope="module")
def runs(tiny, tmp_path_factory):
    return {floor: _run(tiny, tmp_path_factory.mktemp("penalty"), floor) for floor in (0.0, 1.5)}


def test_a_floor_above_the_reranked_coverage_buys_it_with_the_smallest_penalty_that_reaches_it(runs):
    chosen = runs[1.5].evaluation["popularity_penalty"]
    # aimed above the floor on the users it is chosen on, so the floor holds on others
    assert chosen["aimed"] == 1.5 * (1 + Settings().ranker.penalty_headroom) > 1.5
    target = chosen["aimed"] * chosen["lightfm_coverage"]
    assert chosen["unpenalised_coverage"] < target <= chosen["coverage"]
    assert chosen["penalty"] > 0
    assert popularity_penalty(runs[1.5].fit.model) == chosen["penalty"]  # in the evaluated (and saved) model


def test_the_penalty_moves_the_evaluated_lists_coverage_and_no_floor_leaves_them_alone(runs):
    """Same data, seeds and reranker (the penalty does not change its training): the holdout lists of the
    penalised pair show more titles; with floor 0 there is no penalty."""
    assert runs[0.0].evaluation["popularity_penalty"]["penalty"] == 0
    assert popularity_penalty(runs[0.0].fit.model) == 0
    metrics = {floor: run.evaluation["metrics"] for floor, run in runs.items()}
    assert metrics[1.5]["two_stage"]["coverage@10"] > metrics[0.0]["two_stage"]["coverage@10"]
    assert metrics[1.5]["lightfm"] == metrics[0.0]["lightfm"]


def test_the_saved_reranker_carries_the_penalty_chosen_for_the_served_pair(trained_home):
    report = json.loads((trained_home / "var" / "reports" / "latest" / "report.json").read_text())
    served = report["ranker"]["popularity_penalty"]
    assert served["floor"] == 0.5 and served["users"] > 0
    ranker_files = list((trained_home / "bentoml" / "models" / "recsys_ranker").glob("*/ranker.cbm"))
    assert [popularity_penalty(load_catboost(f)) for f in ranker_files] == [served["penalty"]]
