"""The run-time core on small hand-made arrays, with every expected value worked out by hand (no trained model).

The end-to-end tests check that training, evaluation and serving agree; these pin what each core function
computes, so a change in candidate generation, feature assembly or the per-user top-k fails here with the row
that moved.
"""

from __future__ import annotations

import tracemalloc
from dataclasses import replace
from functools import reduce

import numpy as np
from numpy.testing import assert_allclose, assert_array_equal

from recsys.core.candidates import BATCH_FEATURES, CANDIDATE_FEATURES, CandidateBatch, CandidateModel, Mix
from recsys.core.reranker import CROSS_FEATURES, FeatureAssembler, top_k_per_user
from recsys.features.store import OnlineFeatureTable
from recsys.lookup import find_sorted
from recsys.serving.handlers import candidate_answers
from recsys.settings import CandidateSettings

NAN = np.nan


def small_model() -> CandidateModel:
    """Two users, four items (ids 10, 20, 30, 40 at indices 0..3).

    LightFM scores (user vector . item vector, the last item component being the bias):
    user 1 = [1, 1]:  3, 2.5, 1, 0;  user 2 = [-1, 1]: -3, -1.5, -1, 0.
    User 1 watched item 0; user 2 watched items 1 then 2. Popularity: 1, 0, 3, 2. Co-occurrence (one neighbour
    per item): 0 -> 1 (0.5), 1 -> 0 (0.5), 2 -> 3 (2.0), 3 -> 2 (2.0).
    """
    return CandidateModel(
        user_ids=np.array([1, 2], np.int64),
        item_ids=np.array([10, 20, 30, 40], np.int64),
        user_vectors=np.array([[1, 1], [-1, 1]], np.float32),
        item_vectors=np.array([[3, 0], [2, 0.5], [1, 0], [0, 0]], np.float32),
        seen_indptr=np.array([0, 1, 3], np.int64),
        seen_indices=np.array([0, 1, 2], np.int32),
        popular=np.array([1, 0, 3, 2], np.int32),
        segment_keys=np.array(["*|*|0"]),
        segment_popular=np.array([[3, 2]], np.int32),
        cooc_indices=np.array([[1], [0], [3], [2]], np.int32),
        cooc_scores=np.array([[0.5], [0.5], [2.0], [2.0]], np.float32),
    )


def test_candidate_features_are_named_in_the_order_generate_writes_them():
    assert CANDIDATE_FEATURES == ["lfm_score", "lfm_rank", "cooc_score", "ease_score", "ease_rank", "from_lightfm",
                                  "from_popular", "from_cooc", "from_ease"]


def test_generate_unites_the_three_sources_without_seen_items():
    """n_lightfm=2, n_popular=1, n_cooc=1.

    User 1 (item 0 seen): LightFM's best unseen are 1 (rank 0) and 2 (rank 1); the most popular unseen is 1; the
    last title 0 co-occurs with 1 (0.5). User 2 (items 1, 2 seen): LightFM gives 3 (rank 0) then 0 (rank 1); the
    most popular unseen is 0; the last titles co-occur with 0 (0.5, via 1) and 3 (2.0, via 2): 3 is the best.
    Items that LightFM did not propose carry rank n_lightfm; the co-occurrence score is kept for every candidate.
    The model has no EASE: its score is 0 and its rank n_ease (0) everywhere, and it proposes nothing.
    """
    batch = small_model().generate(np.array([0, 1]), Mix(2, 1, 1))
    assert_array_equal(batch.owner, [0, 0, 1, 1])
    assert_array_equal(batch.items, [1, 2, 0, 3])
    assert batch.features.dtype == np.float32
    assert_array_equal(batch.features, [
        # lfm_score, lfm_rank, cooc_score, ease_score, ease_rank, from_lightfm, from_popular, from_cooc, from_ease,
        # ease_dismissed
        [2.5, 0, 0.5, 0, 0, 1, 1, 1, 0, 0],
        [1.0, 1, 0.0, 0, 0, 1, 0, 0, 0, 0],
        [-3.0, 1, 0.5, 0, 0, 1, 1, 0, 0, 0],
        [0.0, 0, 2.0, 0, 0, 1, 0, 1, 0, 0],
    ])


def with_dismissed(model: CandidateModel) -> CandidateModel:
    """User 1 dismissed item 1 (rated it below the threshold); user 2 dismissed nothing."""
    return replace(model, dismissed_indptr=np.array([0, 1, 1], np.int64), dismissed_indices=np.array([1], np.int32))


def test_dismissed_titles_are_excluded_like_the_history():
    """As in the test above, but user 1 dismissed item 1: LightFM's best unseen are now 2 (rank 0) and 3 (rank 1),
    the most popular not excluded is 3, and the co-occurring 1 is dropped; user 2's candidates do not change.
    Asked not to exclude what they saw, user 1 gets item 1 back (and item 0)."""
    model = with_dismissed(small_model())
    batch = model.generate(np.array([0, 1]), Mix(2, 1, 1))
    assert_array_equal(batch.owner, [0, 0, 1, 1])
    assert_array_equal(batch.items, [2, 3, 0, 3])
    assert_array_equal(batch.column("lfm_rank"), [0, 1, 1, 0])
    assert_array_equal(batch.column("from_popular"), [0, 1, 1, 0])
    assert 1 in model.generate(np.array([0]), Mix(2, 1, 1), exclude_seen=False).items


def test_a_model_saved_without_dismissed_titles_loads_and_excludes_its_history(tmp_path):
    model = small_model()
    with_dismissed(model).save(tmp_path)
    for name in ("dismissed_indptr", "dismissed_indices"):  # as a training before they were kept saved it
        (tmp_path / f"{name}.npy").unlink()
    loaded = CandidateModel.load(tmp_path, mmap=True)
    assert len(loaded.dismissed_indptr) == 0
    assert_array_equal(loaded.generate(np.array([0, 1]), Mix(2, 1, 1)).items,
                       model.generate(np.array([0, 1]), Mix(2, 1, 1)).items)


def with_ease(model: CandidateModel) -> CandidateModel:
    """EASE weights (row: watched item, column: scored item): 0 -> 2 (1), 0 -> 3 (2), 1 -> 0 (0.5), 2 -> 0 (0.25),
    2 -> 3 (1). User 1 (watched 0) scores [0, 0, 1, 2]; user 2 (watched 1, 2) scores [0.75, 0, 0, 1]."""
    weights = np.array([[0, 0, 1, 2], [0.5, 0, 0, 0], [0.25, 0, 0, 1], [0, 0, 0, 0]], np.float32)
    return replace(model, ease_weights=weights)


def test_generate_adds_ease_candidates_and_scores_every_candidate_with_ease():
    """n_lightfm=2, n_popular=1, n_cooc=1, n_ease=1: as above, plus EASE's best unseen item of each user (3 for
    both); every candidate carries its EASE score, the ones EASE did not propose rank n_ease (1)."""
    batch = with_ease(small_model()).generate(np.array([0, 1]), Mix(2, 1, 1, 1))
    assert_array_equal(batch.owner, [0, 0, 0, 1, 1])
    assert_array_equal(batch.items, [1, 2, 3, 0, 3])
    assert_array_equal(batch.features, [
        [2.5, 0, 0.5, 0, 1, 1, 1, 1, 0, 0],
        [1.0, 1, 0.0, 1, 1, 1, 0, 0, 0, 0],
        [0.0, 2, 0.0, 2, 0, 0, 0, 0, 1, 0],   # EASE's alone: LightFM's rank is n_lightfm
        [-3.0, 1, 0.5, 0.75, 1, 1, 1, 0, 0, 0],
        [0.0, 0, 2.0, 1, 0, 1, 0, 1, 1, 0],
    ])


def test_every_candidate_carries_the_ease_score_of_the_titles_its_user_dismissed():
    """User 1 watched 0 and dismissed 1, whose EASE row is [0.5, 0, 0.25, 1]: its candidates 2 and 3 carry 0.25 and
    1 (the dismissed title itself is no candidate); user 2 dismissed nothing: 0 everywhere. Without dismissed
    titles, or without EASE, the column is 0."""
    weights = np.array([[0, 0, 1, 2], [0.5, 0, 0.25, 1], [0.25, 0, 0, 1], [0, 0, 0, 0]], np.float32)
    model = replace(with_dismissed(small_model()), ease_weights=weights)
    batch = model.generate(np.array([0, 1]), Mix(2, 0, 0, 1))
    assert_array_equal(batch.owner, [0, 0, 1, 1])
    assert_array_equal(batch.items, [2, 3, 0, 3])
    assert_array_equal(batch.column("ease_dismissed"), [0.25, 1, 0, 0])
    for other in (replace(small_model(), ease_weights=weights), with_dismissed(small_model())):
        assert not other.generate(np.array([0, 1]), Mix(2, 0, 0, 1)).column("ease_dismissed").any()


def test_ease_never_proposes_a_seen_item_and_scores_seen_ones_when_they_are_kept():
    """User 2 watched 1 and 2; EASE's top 4 without the filter is 3, 0 then the seen ones; with it, only 3 and 0."""
    model = with_ease(small_model())
    kept = model.generate(np.array([1]), Mix(1, 0, 0, 4), exclude_seen=False)
    assert_array_equal(kept.items, [0, 1, 2, 3])
    assert_array_equal(kept.column("ease_score"), [0.75, 0, 0, 1])
    filtered = model.generate(np.array([1]), Mix(1, 0, 0, 4))
    assert_array_equal(filtered.items, [0, 3])
    assert_array_equal(filtered.column("ease_rank"), [1, 0])


def long_history_model(n_items: int, history: int) -> CandidateModel:
    """Random arrays, EASE included: user 1 watched one title, user 2 ``history`` titles."""
    rng = np.random.default_rng(0)
    return CandidateModel(
        user_ids=np.array([1, 2], np.int64), item_ids=np.arange(n_items, dtype=np.int64),
        user_vectors=rng.normal(size=(2, 9)).astype(np.float32),
        item_vectors=rng.normal(size=(n_items, 9)).astype(np.float32),
        seen_indptr=np.array([0, 1, 1 + history], np.int64),
        seen_indices=rng.choice(n_items, 1 + history, replace=False).astype(np.int32),
        popular=np.arange(n_items, dtype=np.int32), segment_keys=np.array(["*|*|0"]),
        segment_popular=np.zeros((1, 5), np.int32), cooc_indices=rng.integers(0, n_items, (n_items, 5)).astype(np.int32),
        cooc_scores=rng.random((n_items, 5)).astype(np.float32),
        ease_weights=rng.normal(size=(n_items, n_items)).astype(np.float32))


def test_ease_scores_are_the_sum_of_the_history_rows_in_history_order():
    """Bit for bit the float32 sum a reference adds row by row: the served candidates did not move when the sum
    stopped going through a sparse product."""
    model = long_history_model(500, 40)
    owner, items = np.repeat([0, 1], [1, 40]), model.seen_indices.astype(np.int64)
    expected = [model.ease_weights[items[0]],
                reduce(np.add, model.ease_weights[items[1:]], np.zeros(500, np.float32))]
    assert_array_equal(model.ease_scores(owner, items, 2), expected)


def test_a_users_candidates_take_a_few_catalogue_wide_rows_of_memory_whatever_their_history():
    """Regression: EASE gathered a copy of every history row (60 kB each on Kion's catalogue) before summing them,
    so a request's memory and work grew with the user's history; the rows are now added in place."""
    n_items = 3000
    model, mix = long_history_model(n_items, 200), Mix(100, 30, 30, 50)
    peaks = []
    for row in (0, 1):  # one title of history, then 200
        model.generate(np.array([row]), mix)
        tracemalloc.start()
        model.generate(np.array([row]), mix)
        peaks.append(tracemalloc.get_traced_memory()[1] / (4 * n_items))  # in float32 catalogue rows
        tracemalloc.stop()
    assert max(peaks) < 10, peaks  # ~6 either way; 200 rows more with the copy


def test_ease_weights_saved_column_major_load_row_major_with_the_same_values(tmp_path):
    """Regression: the weights came out of LAPACK column-major and were saved and mapped so; every request gathers
    rows of them, 12x slower that way (fused /recommend spent more CPU in EASE than in LightFM)."""
    model = with_ease(small_model())
    replace(model, ease_weights=np.asfortranarray(model.ease_weights)).save(tmp_path)  # as an older training did
    loaded = CandidateModel.load(tmp_path, mmap=True)
    assert loaded.ease_weights.flags.c_contiguous
    assert_array_equal(loaded.ease_weights, model.ease_weights)
    assert_array_equal(loaded.generate(np.array([0, 1]), Mix(2, 1, 1, 1)).features,
                       model.generate(np.array([0, 1]), Mix(2, 1, 1, 1)).features)


def test_candidate_answers_generate_the_trained_mix_not_the_settings():
    """User 2 of a model trained with one LightFM candidate and nothing else gets that one candidate (item 3), though
    the settings ask for 2 + 1 + 1."""
    model = replace(small_model(), mix=np.array([1, 0, 0, 0], np.int64))
    settings = CandidateSettings(n_lightfm=2, n_popular=1, n_cooc=1, n_ease=0)
    (answer,) = candidate_answers(model, [{"user_id": 2}], settings, max_top_k=10)
    assert_array_equal(answer["items"], [3])


def test_served_mix_is_the_trained_one():
    """The reranker learnt on one mix: serving generates that one, whatever the settings say; a model saved without
    a mix (before it was kept) falls back to the settings'."""
    settings_mix = Mix(100, 30, 30, 50)
    assert small_model().served_mix(settings_mix) == settings_mix
    trained = replace(small_model(), mix=np.array([20, 0, 5, 7], np.int64))
    assert trained.served_mix(settings_mix) == Mix(20, 0, 5, 7)


def test_generate_keeps_seen_items_when_asked():
    """User 1 without the seen filter: LightFM's best are 0 then 1; popularity and co-occurrence both give 1."""
    batch = small_model().generate(np.array([0]), Mix(2, 1, 1), exclude_seen=False)
    assert_array_equal(batch.owner, [0, 0])
    assert_array_equal(batch.items, [0, 1])
    assert_array_equal(batch.features, [[3.0, 0, 0.0, 0, 0, 1, 0, 0, 0, 0], [2.5, 1, 0.5, 0, 0, 1, 1, 1, 0, 0]])


def test_generate_with_one_source_only():
    """No popularity and no co-occurrence candidates: only LightFM's top item of user 2 (item 3)."""
    batch = small_model().generate(np.array([1]), Mix(1, 0, 0))
    assert_array_equal(batch.items, [3])
    assert_array_equal(batch.features, [[0.0, 0, 2.0, 0, 0, 1, 0, 0, 0, 0]])


def small_assembler() -> FeatureAssembler:
    """Users 1 and 2, items 10, 20, 30 (stored sorted by id; the candidate model orders its items 30, 10, 20)."""
    users = OnlineFeatureTable.of_categories(
        ids=np.array([1, 2], np.int64),
        numeric=np.array([[0.75, 0.25, 2000, 4, 5], [0, 1, 1990, 1, 10], [NAN] * 5], np.float32),
        numeric_names=["u_genre_drama", "u_genre_comedy", "u_mean_release_year", "u_watches", "u_days_since_last"],
        categorical=np.array([["age_18_24"], ["age_25_34"], ["unknown"]], object),
        categorical_names=["age"],
    )
    items = OnlineFeatureTable.of_categories(
        ids=np.array([10, 20, 30], np.int64),
        numeric=np.array([[1, 0, 2010, 5, 30], [0.5, 0.5, 1980, 3, 3], [0, 1, 2000, 1, 100], [NAN] * 5], np.float32),
        numeric_names=["i_genre_drama", "i_genre_comedy", "release_year", "i_pop", "i_days_since_first"],
        categorical=np.array([["film"], ["series"], ["film"], ["unknown"]], object),
        categorical_names=["content_type"],
    )
    return FeatureAssembler(users, items, item_ids=np.array([30, 10, 20], np.int64))


def test_feature_names_are_candidate_then_user_then_item_then_cross_features():
    assembler = small_assembler()
    assert assembler.numeric_names == [*CANDIDATE_FEATURES, "u_mean_release_year", "u_watches", "u_days_since_last",
                                       "release_year", "i_pop", "i_days_since_first", *CROSS_FEATURES]
    assert assembler.categorical_names == ["age", "content_type"]


def test_assemble_joins_user_item_and_cross_features_per_candidate():
    """Batch users 2, 1 and an unknown 99. Genre affinity is the dot product of the user's and the item's genre
    shares, the year gap the item's release year minus the user's mean: user 2 x item 30: [0, 1].[0, 1] = 1,
    2000 - 1990 = 10; user 1 x item 20: [.75, .25].[.5, .5] = .5, 1980 - 2000 = -20; user 1 x item 10: .75, 10.
    The item's age at the user's last visit is its days since first seen minus the user's days since last seen:
    100 - 10 = 90, 3 - 5 = -2 (it arrived after the visit), 30 - 5 = 25.
    The unknown user gets the defaults row: NaN numbers, 'unknown' categories."""
    width = len(CANDIDATE_FEATURES)
    candidate = np.arange(3 * len(BATCH_FEATURES), dtype=np.float32).reshape(3, len(BATCH_FEATURES))
    batch = CandidateBatch(owner=np.array([0, 1, 1, 2]), items=np.array([0, 2, 1, 0]),
                           features=np.vstack([candidate, candidate[:1]]))
    data = small_assembler().assemble(np.array([2, 1, 99]), batch)
    numeric = data.num_feature_data
    assert_array_equal(numeric[:, :width], batch.features[:, :width])
    assert_array_equal(numeric[:, width:], [
        # u_mean_release_year, u_watches, u_days_since_last, release_year, i_pop, i_days_since_first,
        # genre_affinity, year_gap, item_age_at_last_visit, ease_dismissed (the batch's own column)
        [1990, 1, 10, 2000, 1, 100, 1.0, 10, 90, 9],
        [2000, 4, 5, 1980, 3, 3, 0.5, -20, -2, 19],
        [2000, 4, 5, 2010, 5, 30, 0.75, 10, 25, 29],
        [NAN, NAN, NAN, 2000, 1, 100, NAN, NAN, NAN, 9],
    ])
    assert data.cat_feature_data.tolist() == [
        ["age_25_34", "film"], ["age_18_24", "series"], ["age_18_24", "film"], ["unknown", "film"]]


def test_a_reranker_trained_without_a_later_cross_feature_is_served_without_it(tmp_path):
    """A model saved before ``item_age_at_last_visit`` and ``ease_dismissed`` joined the cross features loads, and
    its features are assembled without them (and in its order)."""
    from catboost import CatBoost, FeaturesData, Pool

    from recsys.core.reranker import Reranker

    later = ("item_age_at_last_visit", "ease_dismissed")
    full = small_assembler()
    older = [n for n in full.feature_names if n not in later]
    batch = CandidateBatch(owner=np.array([0, 0, 1, 1]), items=np.array([0, 1, 2, 0]),
                           features=np.ones((4, len(BATCH_FEATURES)), np.float32))
    data = full.assemble(np.array([1, 2]), batch)
    keep = [i for i, n in enumerate(full.numeric_names) if n not in later]
    older_data = FeaturesData(num_feature_data=data.num_feature_data[:, keep], cat_feature_data=data.cat_feature_data,
                              num_feature_names=[full.numeric_names[i] for i in keep],
                              cat_feature_names=full.categorical_names)
    model = CatBoost({"iterations": 2, "depth": 1, "verbose": False, "allow_writing_files": False})
    model.fit(Pool(older_data, label=[1, 0, 1, 0]))
    model.save_model(str(tmp_path / "ranker.cbm"), format="cbm")
    reranker = Reranker.load(tmp_path / "ranker.cbm", full)
    assert reranker.assembler.cross == ("genre_affinity", "year_gap")
    assert reranker.assembler.feature_names == older
    assert reranker.score(np.array([1, 2]), batch).shape == (4,)


def test_top_k_per_user_keeps_each_users_best_in_order_and_pads_the_rest():
    """User 0 has items 8 (2.0) and 11 (1.0); user 1 has 9 (3.0), 7 and 10 (0.5 each: the earlier row wins the
    tie); user 2 has none: -1 items with NaN scores."""
    owner = np.array([1, 0, 1, 1, 0])
    items = np.array([7, 8, 9, 10, 11])
    scores = np.array([0.5, 2.0, 3.0, 0.5, 1.0], np.float32)
    top_items, top_scores = top_k_per_user(owner, items, scores, n_users=3, k=2)
    assert_array_equal(top_items, [[8, 11], [9, 7], [-1, -1]])
    assert_array_equal(top_scores, np.array([[2.0, 1.0], [3.0, 0.5], [NAN, NAN]], np.float32))


def test_top_k_per_user_with_fewer_candidates_than_k():
    top_items, top_scores = top_k_per_user(np.array([0]), np.array([5]), np.array([1.5], np.float32), n_users=1, k=3)
    assert_array_equal(top_items, [[5, -1, -1]])
    assert_array_equal(top_scores, np.array([[1.5, NAN, NAN]], np.float32))


def test_find_sorted_says_where_each_id_is_and_whether_it_is_there():
    pos, found = find_sorted(np.array([3, 5, 9]), np.array([5, 4, 9, 12, 1]))
    assert_array_equal(found, [True, False, True, False, False])
    assert_array_equal(pos[found], [1, 2])
    pos, found = find_sorted(np.zeros(0, np.int64), np.array([1, 2]))
    assert_array_equal(found, [False, False])
    assert_array_equal(pos, [0, 0])


def test_model_lookups_by_id():
    model = small_model()
    rows, known = model.user_rows(np.array([2, 7, 1]))
    assert_array_equal(known, [True, False, True])
    assert_array_equal(rows[known], [1, 0])
    assert_array_equal(model.item_index(np.array([40, 15, 10])), [3, -1, 0])
    assert model.profiles(np.array([1])) == [None]  # no profiles stored


def test_candidate_batch_columns_by_name_and_its_constructors():
    batch = small_model().generate(np.array([0, 1]), Mix(2, 1, 1))
    assert_array_equal(batch.column("lfm_rank"), [0, 1, 1, 0])
    assert_array_equal(batch.from_source("popular"), [True, False, True, False])
    assert_array_equal(batch.source_flags(), [[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0]])
    second = batch.take(batch.owner == 1)
    assert_array_equal(second.items, [0, 3])
    assert_array_equal(second.owner, [1, 1])
    per_user = CandidateBatch.of_users([batch.items[:2], np.zeros(0, np.int64), batch.items[2:]],
                                       [batch.features[:2], np.zeros((0, len(BATCH_FEATURES)), np.float32),
                                        batch.features[2:]])
    assert_array_equal(per_user.owner, [0, 0, 2, 2])
    assert_array_equal(per_user.features, batch.features)
    joined = CandidateBatch.concat([batch, second], [2, 3])
    assert_array_equal(joined.owner, [0, 0, 1, 1, 3, 3])
    assert_array_equal(joined.items, [1, 2, 0, 3, 0, 3])


def test_a_reranker_ranks_by_its_stored_popularity_penalty_wherever_it_is_loaded(tmp_path):
    """The penalty travels in the CatBoost file: loaded, the reranker (and the ranker service's handler) rank by
    CatBoost's score less penalty x the percentile of the title's views (``i_pop``: items 30, 10, 20 in the model's
    order have 1, 5, 3: percentiles 1/3, 1, 2/3).
    CatBoost puts the most watched title first; a penalty of 10 puts it last. A file without one ranks by CatBoost's
    score alone."""
    from catboost import CatBoost, Pool

    from recsys.core.reranker import Reranker, set_popularity_penalty
    from recsys.serving.handlers import rank_answers

    assembler = small_assembler()
    batch = CandidateBatch(owner=np.zeros(3, np.int64), items=np.array([0, 1, 2]),
                           features=np.ones((3, len(BATCH_FEATURES)), np.float32))
    data = assembler.assemble(np.array([1]), batch)
    model = CatBoost({"iterations": 1, "depth": 1, "verbose": False, "allow_writing_files": False})
    model.fit(Pool(data, label=[0.0, 1.0, 0.0]))
    model.save_model(str(tmp_path / "plain.cbm"), format="cbm")
    set_popularity_penalty(model, 10)
    model.save_model(str(tmp_path / "penalised.cbm"), format="cbm")

    plain, penalised = (Reranker.load(tmp_path / name, assembler) for name in ("plain.cbm", "penalised.cbm"))
    raw = plain.score(np.array([1]), batch)
    assert plain.penalty == 0 and penalised.penalty == 10
    assert_allclose(penalised.score(np.array([1]), batch), raw - 10 * np.array([1, 3, 2]) / 3, rtol=1e-6)
    request = {"user_id": 1, "items": batch.items, "features": batch.features, "top_k": 3}
    assert rank_answers(plain, np.array([30, 10, 20]), [request])[0]["item_ids"][0] == 10
    assert rank_answers(penalised, np.array([30, 10, 20]), [request])[0]["item_ids"].tolist() == [30, 20, 10]
