"""The reranker that is served learns from two label windows: the label window (stage A's candidates, as the
evaluated reranker does) and the holdout window (stage B's candidates, after the offline evaluation), so it has
twice the labels and the latest of them; with ``ranker.served_windows`` 1 the evaluated reranker is served."""

from __future__ import annotations

import numpy as np

from recsys.settings import Settings
from recsys.training.pipeline import fit_and_evaluate


def _settings(tmp_path, windows: int) -> Settings:
    settings = Settings(home=tmp_path, cache=False, data={"dataset": "synthetic", "size": "tiny", "seed": 7},
                        ranker={"served_windows": windows}).single_threaded()
    return settings


def test_served_reranker_learns_from_the_label_and_the_holdout_window(tiny, tmp_path):
    run = fit_and_evaluate(tiny, _settings(tmp_path, 2), baselines=False, serve=True)
    evaluated, served = run.fit, run.runs[0].served_fit
    assert served is not None and served.model is not evaluated.model
    # every row of the label window, and the holdout window's on top
    assert served.train_rows > evaluated.train_rows
    holdout_users = np.unique(run.split.holdout["user_id"])
    label_users = np.unique(run.split.labels["user_id"])
    assert served.train_users + served.valid_users > evaluated.train_users + evaluated.valid_users
    assert served.train_users + served.valid_users <= len(holdout_users) + len(label_users)
    # the same features as the evaluated one: it is served with the same assembler
    assert served.model.feature_names_ == evaluated.model.feature_names_


def test_one_window_serves_the_evaluated_reranker_and_the_tuner_fits_no_second(tiny, tmp_path):
    assert fit_and_evaluate(tiny, _settings(tmp_path, 1), baselines=False, serve=True).runs[0].served_fit is None
    assert fit_and_evaluate(tiny, _settings(tmp_path, 2), baselines=False).runs[0].served_fit is None


def test_the_trained_pair_serves_the_reranker_of_both_windows(trained_home):
    """`recsys train` saves the two-window reranker: its users are those of the label window and of the holdout
    window (each window's users are groups of their own), and the report says which windows it learnt from."""
    import json

    report = json.loads((trained_home / "var" / "reports" / "latest" / "report.json").read_text())
    ranker, windows = report["ranker"], report["split"]
    assert ranker["label_windows"] == ["labels", "holdout"]
    assert ranker["train_users"] + ranker["valid_users"] > windows["labels"]["users"]
