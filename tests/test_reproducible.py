"""Two trainings of one seed on the same data give the same models, with the default thread counts (not
`Settings.single_threaded()`): up to ``lightfm.reproducible_up_to`` interactions LightFM trains on one thread, since
its multi-threaded SGD (Hogwild) differs from run to run as much as two seeds do, and CatBoost repeats itself at a
given thread count. So two runs of `recsys train` on MovieLens-sized data serve the same answers."""

from __future__ import annotations

import numpy as np

from recsys.settings import LightFMSettings, Settings
from recsys.training.pipeline import fit_and_evaluate


def test_two_runs_of_one_seed_train_the_same_models(tiny, tmp_path):
    settings = Settings(home=tmp_path, cache=False, data={"dataset": "synthetic", "size": "tiny", "seed": 7})
    assert settings.lightfm.threads == 2 and settings.ranker.threads == 2  # the defaults, two threads each
    first, second = (fit_and_evaluate(tiny, settings, baselines=False, serve=True) for _ in range(2))
    a, b = first.runs[0], second.runs[0]
    assert a.state is not None and b.state is not None
    for name in ("item_embeddings", "user_embeddings", "item_biases"):
        np.testing.assert_array_equal(getattr(a.state.model, name), getattr(b.state.model, name), err_msg=name)
    assert a.epochs is not None and b.epochs is not None and a.epochs.scores == b.epochs.scores
    assert first.evaluation["metrics"] == second.evaluation["metrics"]
    assert a.served_fit is not None and b.served_fit is not None
    assert (a.served_fit.best_iteration, a.served_fit.importance) == (b.served_fit.best_iteration,
                                                                      b.served_fit.importance)


def test_large_fits_keep_their_threads():
    lfm = LightFMSettings(threads=2, reproducible_up_to=1_000)
    assert (lfm.threads_for(1_000), lfm.threads_for(1_001)) == (1, 2)
