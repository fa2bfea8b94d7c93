"""What makes training at Kion's size fit in time and memory, on small data: the cache of finished stages keyed by
the data's fingerprint, later LightFM fits going on from the previous one, bounded early stopping, the estimate of
the time left, EASE's in-place inverse and the generator's sampling without replacement."""

from __future__ import annotations

import logging
import os
import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp
from lightfm import LightFM

from recsys.data.schema import Dataset
from recsys.data.synthetic import _draw_without_replacement
from recsys.progress import Timings
from recsys.settings import LightFMSettings, Settings
from recsys.training.baselines import ease_gram, ease_weights
from recsys.training.cache import StageCache, cache_key
from recsys.training.epochs import LightFMState, ValidationScorer, epoch_cap, warm_started
from recsys.training.pipeline import _later_fit, fit_and_evaluate


def _settings(tmp_path) -> Settings:
    return Settings(home=tmp_path, data={"dataset": "synthetic", "size": "tiny", "seed": 7}).single_threaded()


def test_cache_computes_once_per_key_and_never_without_a_folder(tmp_path):
    calls: list[str] = []

    def compute(value: str):
        return lambda: calls.append(value) or value

    def save(value: str, directory):
        (directory / "value.txt").write_text(value)

    def load(directory):
        return (directory / "value.txt").read_text()

    cache = StageCache(tmp_path / "cache")
    assert cache.cached("kind", "k1", compute("a"), save, load) == "a"
    assert cache.cached("kind", "k1", compute("b"), save, load) == "a"  # a hit: not computed again
    assert cache.cached("kind", "k2", compute("c"), save, load) == "c"  # another key: a miss
    assert calls == ["a", "c"]
    assert sorted(p.name for p in (tmp_path / "cache" / "kind").iterdir()) == ["k1", "k2"]  # no staging left over

    off = StageCache(None)
    assert off.cached("kind", "k1", compute("d"), save, load) == "d"
    assert calls == ["a", "c", "d"]
    assert cache_key("x", {"a": 1}) == cache_key("x", {"a": 1}) != cache_key("y", {"a": 1})


def test_cache_evicts_the_least_recently_used_entries_past_its_bound(tmp_path, caplog):
    """Past ``max_bytes`` the entries used longest ago go first (a hit is a use), each logged; the entry just
    written stays even when it alone is over the bound."""
    def save(value: str, directory):
        (directory / "value.txt").write_text(value)

    cache = StageCache(tmp_path / "cache", max_bytes=2_500)
    root = tmp_path / "cache" / "kind"
    for age, key in enumerate(("old", "mid")):
        cache.cached("kind", key, lambda: "x" * 1_000, save, lambda d: (d / "value.txt").read_text())
        os.utime(root / key, (1_000_000 + age, 1_000_000 + age))  # written at distinct times, "old" first
    cache.cached("kind", "old", lambda: "unused", save, lambda d: (d / "value.txt").read_text())  # a hit: used now
    with caplog.at_level(logging.INFO, logger="recsys"):
        cache.cached("kind", "new", lambda: "y" * 1_000, save, lambda d: (d / "value.txt").read_text())
    assert sorted(p.name for p in root.iterdir()) == ["new", "old"]
    assert "cache evicted: kind mid" in caplog.text and "kind old" not in caplog.text

    small = StageCache(tmp_path / "small", max_bytes=10)
    small.cached("kind", "big", lambda: "z" * 1_000, save, lambda d: (d / "value.txt").read_text())
    assert (tmp_path / "small" / "kind" / "big").is_dir()


def test_dataset_round_trip_keeps_the_fingerprint(tiny, tmp_path):
    tiny.save(tmp_path)
    again = Dataset.load(tmp_path)
    assert again.fingerprint() == tiny.fingerprint()
    assert again.name == tiny.name and again.meta == tiny.meta


def test_first_stage_fits_come_from_the_cache_keyed_by_the_data(tiny, tmp_path, caplog):
    """A second run on the same data reads both first-level fits (A, and B that went on from A) and gives the same
    offline metrics, also with another bound on EASE's catalogue; data with one interaction changed has another
    fingerprint, so nothing is read."""
    settings = _settings(tmp_path)
    cache = StageCache(settings.cache_dir)
    with caplog.at_level(logging.INFO, logger="recsys"):
        first = fit_and_evaluate(tiny, settings, baselines=False, cache=cache)
        assert "cache hit" not in caplog.text
        assert caplog.text.count("cache miss: first-stage") == 2
        caplog.clear()
        second = fit_and_evaluate(tiny, settings, baselines=False, cache=cache)
        assert caplog.text.count("cache hit: first-stage") == 2 and "cache miss" not in caplog.text
        assert second.evaluation["metrics"] == first.evaluation["metrics"]
        assert second.epochs.as_dict() == first.epochs.as_dict()

        caplog.clear()  # EASE joins the model after the cache: its bound is not part of the fit
        no_ease = settings.model_copy(update={"candidates": settings.candidates.model_copy(update={"ease_max_items": 0})})
        fit_and_evaluate(tiny, no_ease, baselines=False, cache=cache)
        assert caplog.text.count("cache hit: first-stage") == 2 and "cache miss" not in caplog.text

        changed = Dataset(tiny.name, tiny.interactions.copy(), tiny.users, tiny.items, tiny.meta)
        changed.interactions.loc[0, "watched_pct"] = 100.0 - changed.interactions.loc[0, "watched_pct"]
        caplog.clear()
        fit_and_evaluate(changed, settings, baselines=False, cache=cache)
        assert "cache hit" not in caplog.text and caplog.text.count("cache miss: first-stage") == 2


def test_later_fits_go_on_from_the_previous_one(tiny, tmp_path):
    """With warm_epochs, fit B trains that many epochs from fit A's state; with 0, from scratch for A's count."""
    settings = _settings(tmp_path)
    run = fit_and_evaluate(tiny, settings, baselines=False)
    state = run.runs[0].state
    later = _later_fit(settings, state, run.epochs)
    assert later.warm is state and later.settings.lightfm.epochs == settings.lightfm.warm_epochs
    cold = settings.model_copy(update={"lightfm": settings.lightfm.model_copy(update={"warm_epochs": 0})})
    fresh = _later_fit(cold, state, run.epochs)
    assert fresh.warm is None and fresh.settings.lightfm.epochs == run.epochs.best_epoch


def test_warm_start_copies_feature_rows_by_name():
    """Rows the earlier fit had (by name, wherever they moved) start where it left them, learning rates
    included; new rows start fresh."""
    lfm = LightFMSettings(no_components=4)
    earlier = LightFM(no_components=4, random_state=0)
    earlier._initialize(4, 1, 3)
    earlier.user_embeddings[:] = np.arange(12, dtype=np.float32).reshape(3, 4)
    earlier.user_embedding_gradients[:] = 5.0
    state = LightFMState(earlier, np.array(["id:1", "id:2", "age:x"]), np.array(["id:10"]))
    model = warm_started(state, np.array(["id:0", "id:2", "age:x", "id:1"]), np.array(["id:10"]), lfm, seed=1)
    np.testing.assert_array_equal(model.user_embeddings[[3, 1, 2]], earlier.user_embeddings)
    np.testing.assert_array_equal(model.user_embedding_gradients[[3, 1, 2]], 5.0)
    assert not np.isin(model.user_embeddings[0], earlier.user_embeddings).any()
    assert (model.user_embedding_gradients[0] == 1.0).all()  # adagrad's fresh accumulator
    np.testing.assert_array_equal(model.item_embeddings, earlier.item_embeddings)


def test_early_stopping_is_bounded_on_large_data():
    lfm = LightFMSettings(epochs=80, eval_every=2)
    assert epoch_cap(lfm, 400_000) == 80           # small data: the setting's count
    assert epoch_cap(lfm, 4_300_000) == 9          # Kion's history window
    assert epoch_cap(lfm, 100_000_000) == 2        # never less than one step


def test_step_logs_say_how_much_of_the_run_is_left(caplog):
    timings = Timings()
    timings.plan({"a": 1.0, "b": 3.0})
    with caplog.at_level(logging.INFO, logger="recsys"):
        with timings.step("first", "a"):
            pass
        with timings.step("unplanned"):
            pass
    assert "[step 1 of 2]" in caplog.text
    assert "of the run left)" in caplog.records[1].getMessage()
    assert "left" not in caplog.records[-1].getMessage()
    assert timings.eta() == pytest.approx(3 * timings["first"])  # b costs 3 a's, at a's pace


def test_a_step_answered_from_the_cache_sets_no_pace(tmp_path, caplog):
    """A cached fit takes a moment where computing it takes minutes: the estimate of what is left comes from the
    steps that computed (a run resumed from its cache used to promise the rest in seconds)."""
    timings = Timings()
    timings.plan({"a": 1.0, "b": 1.0, "c": 2.0})
    cache = StageCache(tmp_path / "cache", on_hit=timings.from_cache)
    cache.cached("kind", "key", lambda: 1, lambda value, path: None, lambda path: 1)  # a miss: stored
    with caplog.at_level(logging.INFO, logger="recsys"):
        with timings.step("first", "a"):
            assert cache.cached("kind", "key", lambda: 2, lambda value, path: None, lambda path: 1) == 1  # a hit
        assert timings.eta() is None  # nothing computed yet: no pace to tell
        assert "left" not in caplog.records[-1].getMessage()
        with timings.step("second", "b"):
            pass
    assert timings.eta() == pytest.approx(2 * timings["second"])  # c costs two b's, at b's pace alone


def test_ease_weights_in_float32_match_the_float64_formula():
    x = sp.random(2_000, 300, density=0.03, format="csr", random_state=0, dtype=np.float32)
    x.data[:] = 1.0
    gram = ease_gram(x)
    weights = ease_weights(x, 20.0, gram)
    assert weights.dtype == np.float32
    inverse = np.linalg.inv(x.T.toarray().astype(np.float64) @ x.toarray() + 20.0 * np.eye(300))
    expected = -inverse / np.diag(inverse)[None, :]
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(weights, expected, atol=1e-5 * np.abs(expected).max())
    np.testing.assert_array_equal(gram, ease_gram(x))  # the search's shared gram is left as it was


def test_draws_are_distinct_weighted_and_never_zero_weight():
    """Each row gets min(n, columns with weight) distinct columns; a zero weight is never drawn; the first draw
    follows the weights (checked on 20,000 rows, far from a uniform draw)."""
    rng = np.random.default_rng(3)
    weights = np.tile(np.array([8.0, 4.0, 2.0, 1.0, 1.0, 0.0] + [0.0] * 70, np.float32), (20_000, 1))
    n = np.array([1] * 19_990 + [10] * 10)
    rows, cols = _draw_without_replacement(weights, n, rng)
    assert np.all(np.diff(rows) >= 0)
    assert (weights[rows, cols] > 0).all()
    counts = np.bincount(rows, minlength=len(n))
    np.testing.assert_array_equal(counts, np.minimum(n, 5))
    assert len(np.unique(rows * 100 + cols)) == len(rows)
    single = cols[np.isin(rows, np.flatnonzero(n == 1))]
    share = np.bincount(single, minlength=5)[:5] / len(single)
    np.testing.assert_allclose(share, np.array([8, 4, 2, 1, 1]) / 16, atol=0.02)



def test_candidate_recall_of_a_source_that_gave_nothing_is_zero():
    """With ``n_popular`` 0 the popular source is empty: the evaluation reports 0 for it instead of failing."""
    from recsys.training.metrics import candidate_recall

    truth = sp.csr_matrix(np.eye(3, dtype=np.float32))
    assert candidate_recall(np.zeros(0, np.int64), np.zeros(0, np.int64), truth) == 0.0
    assert candidate_recall(np.array([0, 1]), np.array([0, 2]), truth) == pytest.approx(1 / 3)


def test_reranker_target_discounts_hits_on_popular_titles(tiny, tmp_path):
    """A hit on a title many watched counts less than one on a rarely watched title (0: every hit counts 1)."""
    from recsys.training.pipeline import _fit_first_stage
    from recsys.training.second_stage import _debiased_gain
    from recsys.training.split import split_interactions

    settings = _settings(tmp_path)
    split = split_interactions(tiny.interactions, settings.split, tiny.name)
    candidates = _fit_first_stage(tiny, split.history, split.label_as_of, settings, 7).model
    views = np.bincount(candidates.seen_indices, minlength=len(candidates.item_ids))
    popular, rare = int(np.argmax(views)), int(np.argmin(views))
    gain = _debiased_gain(candidates, np.array([popular, rare]), 0.5)
    assert gain[0] < gain[1]
    assert gain[1] / gain[0] == pytest.approx(np.sqrt((views[popular] + 1) / (views[rare] + 1)), rel=1e-5)
    np.testing.assert_array_equal(_debiased_gain(candidates, np.array([popular, rare]), 0.0), 1.0)


def test_the_ease_baseline_takes_the_candidate_models_own_weights(tiny, tmp_path, monkeypatch):
    """A candidate model that carries EASE over the whole catalogue has the baseline's weights (same history, same
    L2 weight): the evaluation reads them instead of inverting the gram matrix again (0.9 GB at Kion's size), and
    scores EASE as a run without EASE in the model does."""
    from recsys.training import evaluate as evaluate_module

    settings = _settings(tmp_path)
    settings = settings.model_copy(update={"eval": settings.eval.model_copy(update={"ease_lambda": 100.0})})
    without = settings.model_copy(update={"candidates": settings.candidates.model_copy(update={"ease_max_items": 0})})
    cache = StageCache(settings.cache_dir)
    computed = fit_and_evaluate(tiny, without, cache=cache).evaluation["metrics"]["ease"]

    def no_inverse(*args, **kwargs):
        raise AssertionError("EASE's weights computed again")

    monkeypatch.setattr(evaluate_module, "ease_weights", no_inverse)
    assert fit_and_evaluate(tiny, settings, cache=cache).evaluation["metrics"]["ease"] == computed


def test_kion_size_keeps_ease_in_the_two_stage_model_and_plans_its_inverses(tiny):
    """At the seed's size (15,000 titles) EASE is a candidate source and feature by default (the two-stage model
    led EASE only with it, README "Training at Kion's size"); the time estimate then charges an inverse to every
    first-level fit and none to the evaluation, which reads the model's weights; without evaluation, no B."""
    from recsys.data.synthetic import SIZES
    from recsys.training.pipeline import INVERSE_S, _expected_seconds

    settings = Settings()
    assert SIZES["kion"].n_items <= settings.candidates.ease_max_items
    without = settings.model_copy(update={"candidates": settings.candidates.model_copy(update={"ease_max_items": 0})})
    inverse = INVERSE_S * len(tiny.items) ** 3
    plan, plain = _expected_seconds(tiny, settings, 1), _expected_seconds(tiny, without, 1)
    for step in ("A0", "B0", "C"):
        assert plan[step] - plain[step] == pytest.approx(inverse)
    assert plain["eval0"] - plan["eval0"] == pytest.approx(inverse)
    assert "B0" not in _expected_seconds(tiny, settings, 1, evaluated=False)


def test_time_estimate_charges_single_threaded_fits_their_threads(tiny):
    """A fit small enough to be reproducible runs on one thread (`LightFMSettings.threads_for`): its estimate is
    `threads` times that of the same fit on all of them (it was charged as if it ran on two)."""
    from recsys.training.pipeline import INVERSE_S, _expected_seconds

    settings = Settings()
    parallel = settings.model_copy(update={"lightfm": settings.lightfm.model_copy(update={"reproducible_up_to": 0})})
    inverse = INVERSE_S * len(tiny.items) ** 3 if len(tiny.items) <= settings.candidates.ease_max_items else 0.0
    one, two = _expected_seconds(tiny, settings, 1), _expected_seconds(tiny, parallel, 1)
    for step in ("A0", "B0", "C"):
        assert one[step] - inverse == pytest.approx(settings.lightfm.threads * (two[step] - inverse))
    assert one["ranker0"] == two["ranker0"]


def test_early_stopping_scores_a_bounded_block_of_users_at_a_time():
    """Regression: the validation scorer ranked 2,048 users x all titles at once, 18 GB for a million titles (the
    catalogue size was OOM-killed). Its peak memory now follows its block size, with the same top lists, and
    watched titles are never among them."""
    rng = np.random.default_rng(3)
    users, items = 400, 6_000
    seen = sp.random(users, items, density=0.01, format="csr", random_state=4, dtype=np.float32)
    seen.data[:] = 1
    truth = sp.random(users, items, density=0.002, format="csr", random_state=5, dtype=np.float32)
    truth = (truth - truth.multiply(seen > 0)).tocsr()
    truth.eliminate_zeros()
    truth.data[:] = 1
    model = LightFM(no_components=8, random_state=1)
    model.fit_partial(sp.coo_matrix(seen), epochs=1)
    model.item_biases[:] = rng.normal(size=items).astype(np.float32) * 5  # watched titles would rank high

    def peak(block_bytes: int) -> tuple[np.ndarray, int]:
        scorer = ValidationScorer(seen, truth, None, None, n=50, k=10, max_users=users, seed=0,
                                  block_bytes=block_bytes)
        tracemalloc.start()
        top = scorer.top_items(model)
        peak_bytes = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return top, peak_bytes

    whole, whole_peak = peak(users * items * 4)
    blocked, blocked_peak = peak(8 * items * 4)
    assert np.array_equal(whole, blocked)
    assert blocked_peak < whole_peak / 8, (blocked_peak, whole_peak)
    rows = np.repeat(np.arange(len(whole)), whole.shape[1])
    scorer_rows = ValidationScorer(seen, truth, None, None, 50, 10, users, 0).rows
    assert not np.asarray(seen[scorer_rows][rows, whole.ravel()]).any()
