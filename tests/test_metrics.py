"""Ranking metrics, candidate recall and the single-stage baselines on hand-made cases computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.training.baselines import _row_major, ease_recommend, ease_weights, popular_recommend
from recsys.training.metrics import candidate_recall, ranking_metrics, relevance

N_ITEMS = 8


def truth_of(rows: list[set[int]], n_items: int = N_ITEMS) -> sp.csr_matrix:
    """Users x items 0/1 matrix from one set of relevant item indices per user."""
    dense = np.zeros((len(rows), n_items), dtype=np.float32)
    for user, items in enumerate(rows):
        dense[user, sorted(items)] = 1.0
    return sp.csr_matrix(dense)


# ---- ranking_metrics ----------------------------------------------------------------------------------------

def test_two_users_k3_by_hand():
    recommended = np.array([[5, 1, 2], [0, -1, -1]])
    truth = truth_of([{1, 7}, {3}])
    # hits: user0 [0, 1, 0] (item 1 at rank 2), user1 [0, 0, 0] (the -1 pads never hit)
    assert relevance(recommended, truth).tolist() == [[False, True, False], [False, False, False]]
    got = ranking_metrics(recommended, truth, n_catalogue=N_ITEMS)
    assert set(got) == {"map@3", "ndcg@3", "recall@3", "hitrate@3", "coverage@3"}
    # MAP: user0 precision@2 = 1/2 at its one hit, divided by min(k=3, 2 relevant) = 2 -> 0.25; user1 0.
    assert got["map@3"] == pytest.approx((0.25 + 0.0) / 2)  # 0.125
    # NDCG: user0 DCG = 1/log2(3); IDCG (2 relevant) = 1 + 1/log2(3); user1 0.
    ndcg0 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))  # 0.386853
    assert got["ndcg@3"] == pytest.approx(ndcg0 / 2)  # 0.193426
    # recall: user0 1 of 2, user1 0 of 1
    assert got["recall@3"] == pytest.approx((0.5 + 0.0) / 2)  # 0.25
    # hitrate: user0 has a hit, user1 does not
    assert got["hitrate@3"] == pytest.approx(0.5)
    # coverage: distinct shown items {5, 1, 2, 0} (pads excluded) out of 8
    assert got["coverage@3"] == pytest.approx(4 / 8)


def test_map_divides_by_min_of_k_and_relevant():
    # 4 relevant items, k = 3, hits at ranks 2 and 3.
    recommended = np.array([[6, 0, 1]])
    truth = truth_of([{0, 1, 2, 3}])
    got = ranking_metrics(recommended, truth, n_catalogue=N_ITEMS)
    # AP = (1/2 + 2/3) / min(3, 4) = 7/18
    assert got["map@3"] == pytest.approx(7 / 18)
    # DCG = 1/log2(3) + 1/log2(4); IDCG (3 slots filled) = 1 + 1/log2(3) + 1/2
    assert got["ndcg@3"] == pytest.approx((1 / math.log2(3) + 0.5) / (1 + 1 / math.log2(3) + 0.5))
    assert got["recall@3"] == pytest.approx(2 / 4)
    assert got["hitrate@3"] == pytest.approx(1.0)
    assert got["coverage@3"] == pytest.approx(3 / 8)


def test_perfect_lists_score_one():
    recommended = np.array([[1, 7, 4], [3, -1, -1]])
    truth = truth_of([{1, 7}, {3}])
    got = ranking_metrics(recommended, truth, n_catalogue=N_ITEMS)
    for name in ("map@3", "ndcg@3", "recall@3", "hitrate@3"):
        assert got[name] == pytest.approx(1.0), name
    assert got["coverage@3"] == pytest.approx(4 / 8)


def test_order_matters_for_map_and_ndcg_but_not_recall():
    truth = truth_of([{1}])
    first = ranking_metrics(np.array([[1, 2, 3]]), truth, N_ITEMS)
    last = ranking_metrics(np.array([[2, 3, 1]]), truth, N_ITEMS)
    assert first["map@3"] == pytest.approx(1.0) and last["map@3"] == pytest.approx(1 / 3)
    assert first["ndcg@3"] == pytest.approx(1.0) and last["ndcg@3"] == pytest.approx(1 / math.log2(4))
    assert first["recall@3"] == last["recall@3"] == pytest.approx(1.0)


def test_user_without_relevant_items_raises():
    recommended = np.array([[1, 2, 3], [1, 2, 3]])
    truth = truth_of([{1}, set()])
    with pytest.raises(ValueError, match="holdout item"):
        ranking_metrics(recommended, truth, n_catalogue=N_ITEMS)


# ---- candidate_recall ---------------------------------------------------------------------------------------

def test_candidate_recall_by_hand():
    truth = truth_of([{1, 7}, {3}])
    # user0's candidates {1, 2, 7} hold both relevant items (2/2); user1's {0, 4} hold none (0/1)
    owner = np.array([0, 0, 0, 1, 1])
    items = np.array([1, 2, 7, 0, 4])
    assert candidate_recall(owner, items, truth) == pytest.approx((1.0 + 0.0) / 2)
    # user0 finds 1 of 2, user1 finds 1 of 1
    assert candidate_recall(np.array([0, 1]), np.array([7, 3]), truth) == pytest.approx((0.5 + 1.0) / 2)


def test_candidate_recall_of_a_source_that_proposed_nothing_is_zero():
    """A mix with no popularity or co-occurrence candidates (tune searches n_popular and n_cooc from 0): scipy
    answers the empty look-up with a matrix, which crashed the search's evaluation."""
    assert candidate_recall(np.zeros(0, np.int64), np.zeros(0, np.int64), truth_of([{1}, {3}])) == 0.0


def test_candidate_recall_counts_users_without_candidates_as_zero():
    truth = truth_of([{1}, {2}, {3}])
    # only user 0 has candidates; users 1 and 2 (the last ones) must still count, as 0
    assert candidate_recall(np.array([0]), np.array([1]), truth) == pytest.approx(1 / 3)


# ---- baselines ----------------------------------------------------------------------------------------------

def _csr(rows: list[list[int]]) -> sp.csr_matrix:
    return sp.csr_matrix(np.array(rows, dtype=np.float32))


def test_popular_recommend_skips_seen_items_and_pads():
    popular = np.array([0, 1, 2, 3, 4])
    seen = _csr([[1, 0, 1, 0, 0],   # saw 0 and 2
                 [0, 0, 0, 0, 0],   # saw nothing
                 [1, 1, 1, 1, 0]])  # saw all but 4
    assert popular_recommend(popular, seen, 2).tolist() == [[1, 3], [0, 1], [4, -1]]
    assert popular_recommend(popular[::-1].copy(), seen, 2).tolist() == [[4, 3], [4, 3], [4, -1]]
    wide = popular_recommend(popular, seen, 6)
    assert wide.tolist() == [[1, 3, 4, -1, -1, -1], [0, 1, 2, 3, 4, -1], [4, -1, -1, -1, -1, -1]]
    dense = seen.toarray()
    for user, recs in enumerate(wide):
        assert not dense[user, recs[recs >= 0]].any()


# Items 0 and 1 always appear together; 2 and 3 mostly together.
EASE_TRAIN = [[1, 1, 0, 0],
              [1, 1, 0, 0],
              [1, 1, 1, 0],
              [0, 0, 1, 1],
              [0, 0, 1, 1],
              [0, 1, 0, 1]]


def test_ease_weights_have_zero_diagonal():
    weights = ease_weights(_csr(EASE_TRAIN), l2=0.5)
    assert weights.shape == (4, 4) and weights.dtype == np.float32
    assert np.all(np.diag(weights) == 0)
    # the strongest neighbour of item 0 is item 1, its constant companion
    assert int(np.argmax(weights[0])) == 1


def test_ease_weights_are_the_closed_form_in_row_major_order():
    """Regression: they were column-major (LAPACK's order), and serving gathers rows of them per request. Checked
    against B = I - P / diag(P), P = (X^T X + l2 I)^-1 in float64, on a catalogue spanning several of the in-place
    transpose's blocks."""
    matrix = sp.random(300, 40, density=0.2, random_state=0, format="csr", dtype=np.float32)
    matrix.data[:] = 1
    p = np.linalg.inv((matrix.T @ matrix).toarray().astype(np.float64) + 5.0 * np.eye(40))
    expected = -p / np.diag(p)[None, :]
    np.fill_diagonal(expected, 0)
    weights = ease_weights(matrix, l2=5.0)
    assert weights.flags.c_contiguous
    np.testing.assert_allclose(weights, expected, atol=1e-4)
    column_major = np.asfortranarray(expected.astype(np.float32))
    assert np.array_equal(_row_major(column_major, block=16), expected.astype(np.float32))


def test_ease_recommends_the_co_occurring_item():
    weights = ease_weights(_csr(EASE_TRAIN), l2=0.5)
    history = _csr([[1, 0, 0, 0]])  # saw only item 0
    assert ease_recommend(history, weights, np.arange(4), k=1).tolist() == [[1]]


def test_ease_never_recommends_seen_items_when_enough_unseen_remain():
    weights = ease_weights(_csr(EASE_TRAIN), l2=0.5)
    history = _csr([[1, 0, 0, 0], [0, 0, 1, 1], [1, 0, 1, 0]])
    recs = ease_recommend(history, weights, np.arange(4), k=2)
    dense = history.toarray()
    for user, row in enumerate(recs):
        assert (row >= 0).all()
        assert not dense[user, row].any(), (user, row)
    # item subset: item ids are mapped back through it
    subset = np.array([1, 3])
    sub_weights = ease_weights(_csr(EASE_TRAIN)[:, subset], l2=0.5)
    out = ease_recommend(_csr([[0, 1, 0, 0]]), sub_weights, subset, k=1)
    assert out.tolist() == [[3]]  # an id of the full catalogue, not the subset position 1


def test_ease_never_recommends_seen_items_even_for_heavy_users():
    weights = ease_weights(_csr(EASE_TRAIN), l2=0.5)
    history = _csr([[1, 1, 1, 0]])  # saw 3 of the 4 items; only item 3 is left
    recs = ease_recommend(history, weights, np.arange(4), k=3)
    assert recs.tolist() == [[3, -1, -1]]  # regression: seen items 0 and 1 were once returned as padding
