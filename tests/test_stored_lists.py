"""Each known user's LightFM and EASE lists, stored at training time, answer exactly as the lists computed per
request (issue 15, item 2): one piece of code finds them (``CandidateModel.first_lists``), for a block of users at
training time and for a request's batch in serving, and a user's lists do not depend on the batch they are found
in. The model here is random but has exact ties in its LightFM scores that float32 rounding breaks one way or the
other depending on the order of the sums (as BLAS orders them by the batch's shape).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from recsys.core.candidates import STORED_FIELDS, CandidateBatch, CandidateModel, Mix

MIX = Mix(40, 10, 10, 20)
USERS, ITEMS, DIM = 600, 700, 33


def tied_model() -> CandidateModel:
    """Users' vectors are one value repeated (then the bias's 1) and items come in pairs whose components are the
    same numbers in another order, so both items of a pair have the same exact LightFM score for every user; the
    float32 sums of the two differ by the last bits, which way depending on the summation's order. Histories of 0
    to 60 titles, some titles dismissed, EASE weights and co-occurrence included."""
    rng = np.random.default_rng(7)
    users = np.repeat(rng.normal(size=(USERS, 1)), DIM - 1, axis=1)
    user_vectors = np.hstack([users, np.ones((USERS, 1))]).astype(np.float32)
    half = rng.normal(size=(ITEMS // 2, DIM)).astype(np.float32)
    twins = np.hstack([rng.permuted(half[:, :-1], axis=1), half[:, -1:]])  # same embedding sum, same bias
    lengths = rng.integers(0, 61, USERS)
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    seen = np.concatenate([rng.choice(ITEMS, n, replace=False) for n in lengths]).astype(np.int32)
    dismissed = rng.integers(0, 3, USERS)
    return CandidateModel(
        user_ids=np.arange(USERS, dtype=np.int64) * 3, item_ids=np.arange(ITEMS, dtype=np.int64) + 100,
        user_vectors=user_vectors, item_vectors=np.vstack([half, twins]),
        seen_indptr=indptr, seen_indices=seen,
        popular=rng.permutation(ITEMS).astype(np.int32), segment_keys=np.array(["*|*|0"]),
        segment_popular=np.zeros((1, 5), np.int32),
        cooc_indices=rng.integers(0, ITEMS, (ITEMS, 5)).astype(np.int32),
        cooc_scores=rng.random((ITEMS, 5)).astype(np.float32),
        ease_weights=rng.normal(size=(ITEMS, ITEMS)).astype(np.float32),
        mix=np.array(MIX, np.int64),
        dismissed_indptr=np.concatenate([[0], np.cumsum(dismissed)]).astype(np.int64),
        dismissed_indices=rng.integers(0, ITEMS, int(dismissed.sum())).astype(np.int32))


@pytest.fixture(scope="module")
def model() -> CandidateModel:
    return tied_model()


@pytest.fixture(scope="module")
def stored(model: CandidateModel) -> CandidateModel:
    return model.with_stored_lists(MIX, block_bytes=60 * 8 * ITEMS)  # blocks of 60 users


def per_user(batch: CandidateBatch, users: int) -> list[CandidateBatch]:
    bounds = np.searchsorted(batch.owner, np.arange(users + 1))
    return [batch.take(slice(bounds[j], bounds[j + 1])) for j in range(users)]


def in_batches(model: CandidateModel, rows: np.ndarray, size: int, **kwargs: object) -> list[CandidateBatch]:
    """Each user's candidates, asked for in batches of ``size`` in the order of ``rows``."""
    return [user for start in range(0, len(rows), size)
            for user in per_user(model.generate(rows[start:start + size], MIX, **kwargs), len(rows[start:start + size]))]


def assert_same(got: list[CandidateBatch], want: list[CandidateBatch]) -> None:
    for j, (a, b) in enumerate(zip(got, want, strict=True)):
        assert_array_equal(a.items, b.items, err_msg=f"user {j}")
        assert_array_equal(a.features, b.features, err_msg=f"user {j}")  # bit for bit


def test_the_model_has_ties_that_rounding_breaks_differently_in_different_batch_shapes(model):
    """The premise of the tests below: the BLAS product's scores of one user move with the batch's shape."""
    rows = np.arange(64)
    alone = np.vstack([model.lightfm_scores(rows[j:j + 1]) for j in rows])
    assert (alone != model.lightfm_scores(rows)).any()


@pytest.mark.parametrize("size", [1, 2, 7, 32, 150])
def test_a_users_candidates_do_not_depend_on_the_batch(model, size):
    """Regression: the LightFM top-n was picked from BLAS scores, whose last bits depend on the batch's shape, so
    tied items swapped ranks (and a user's candidates at the n-th place changed) with the batch."""
    rows = np.random.default_rng(size).permutation(USERS)[:300]
    want = in_batches(model, rows, 300)
    assert_same(in_batches(model, rows, size), want)


@pytest.mark.parametrize("size", [1, 3, 32, 600])
def test_stored_lists_answer_bit_for_bit_like_the_computed_ones(model, stored, size):
    rows = np.random.default_rng(size).permutation(USERS)
    assert_same(in_batches(stored, rows, size), in_batches(model, rows, 600))


def test_a_request_with_the_stored_parameters_reads_the_stored_lists(stored, monkeypatch):
    def computed(*args: object) -> None:
        raise AssertionError("computed although the stored lists fit")
    monkeypatch.setattr(stored, "first_lists", computed)
    stored.generate(np.arange(10), MIX)


@pytest.mark.parametrize("change", [{"exclude_seen": False}, {"mix": Mix(41, 10, 10, 20)}, {"mix": Mix(40, 10, 10, 19)}])
def test_other_parameters_are_computed_as_before(model, stored, change):
    """Without the seen filter, or with other LightFM or EASE counts, the stored lists are not the answer."""
    mix, rows = change.get("mix", MIX), np.arange(0, USERS, 7)
    exclude = change.get("exclude_seen", True)
    got, want = stored.generate(rows, mix, exclude), model.generate(rows, mix, exclude)
    assert_same([got], [want])
    assert not stored.stored_lists_fit(mix) or not exclude


def test_the_stored_lists_are_the_users_own(model, stored):
    """Row j of the stored lists is user j's lists, item indices best first (int16 for this catalogue)."""
    assert stored.stored_lightfm.dtype == np.int16 and stored.stored_lightfm.shape == (USERS, MIX.n_lightfm)
    assert stored.stored_ease.shape == (USERS, MIX.n_ease)
    lightfm, ease, _ = model.first_lists(np.array([5]), MIX, *model._exclusions(np.array([5]), exclude_seen=True))
    assert_array_equal(stored.stored_lightfm[5], lightfm[0])
    assert_array_equal(stored.stored_ease[5], ease[0])


def test_ease_scores_of_pairs_are_the_entries_of_the_whole_sum(model):
    """Bit for bit: the EASE feature of a stored-list request is the number the whole-row sum gives."""
    rows = np.arange(USERS)
    owner, items = model._history_pairs(rows)
    whole = model.ease_scores(owner, items, USERS)
    pairs_owner = np.repeat(rows, 50)
    pairs_items = np.random.default_rng(1).integers(0, ITEMS, len(pairs_owner))
    assert_array_equal(model.ease_pair_scores(rows, pairs_owner, pairs_items), whole[pairs_owner, pairs_items])


def test_saved_lists_are_mapped_and_a_model_without_them_still_loads(stored, model, tmp_path):
    stored.save(tmp_path)
    mapped = CandidateModel.load(tmp_path, mmap=True)
    assert isinstance(mapped.stored_lightfm.base, np.memmap) or not mapped.stored_lightfm.flags.owndata
    assert mapped.stored_lists_fit(MIX)
    rows = np.arange(0, USERS, 5)
    assert_same([mapped.generate(rows, MIX)], [model.generate(rows, MIX)])
    assert not CandidateModel.load(tmp_path, mmap=True, stored_lists=False).stored_lists_fit(MIX)
    for name in STORED_FIELDS:  # as a pair trained before the lists were kept
        (Path(tmp_path) / f"{name}.npy").unlink()
    older = CandidateModel.load(tmp_path, mmap=True)
    assert not older.stored_lists_fit(MIX)
    assert_same([older.generate(rows, MIX)], [model.generate(rows, MIX)])


def test_lists_of_another_users_table_are_refused(stored, tmp_path):
    replace(stored, stored_lightfm=stored.stored_lightfm[:-1]).save(tmp_path)
    with pytest.raises(ValueError, match="stored_lightfm.npy has 599 users' lists for 600 users"):
        CandidateModel.load(tmp_path, mmap=True)


def test_a_model_with_an_item_index_stores_no_lists(model):
    assert replace(model, index=object()).with_stored_lists(MIX).stored_for.size == 0  # type: ignore[arg-type]


def test_storing_lists_or_not_is_no_part_of_a_first_level_fits_cache_key():
    """The lists are found after the fit, from the fitted model: a cached fit serves either way."""
    import pandas as pd

    from recsys.settings import Settings
    from recsys.training.pipeline import _first_stage_key

    settings = Settings()
    off = settings.model_copy(update={"candidates": settings.candidates.model_copy(update={"stored_lists": False})})
    key = [("f" * 16, pd.Timestamp("2021-01-01"), 10), {"seed": 1, "validated": True, "warm": None}]
    assert _first_stage_key(*key[0], settings, **key[1]) == _first_stage_key(*key[0], off, **key[1])
