"""Feature store: explicit Parquet schema, fingerprints, fast lookups with defaults, and no leakage."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.features.build import build_feature_tables
from recsys.features.store import FeatureStoreError, OnlineFeatureTable, load_feature_store, write_feature_store


@pytest.fixture(scope="module")
def cutoff(tiny) -> pd.Timestamp:
    return tiny.interactions["last_watch_dt"].max() - pd.Timedelta(days=14)


@pytest.fixture(scope="module")
def tables(tiny, cutoff):
    return build_feature_tables(tiny.interactions, tiny.users, tiny.items, cutoff)


@pytest.fixture()
def store_dir(tmp_path, tables, tiny):
    write_feature_store(tables, tmp_path, tiny.fingerprint())
    return tmp_path


def test_parquet_schema_is_explicit_and_fingerprinted(store_dir):
    manifest = load_feature_store(store_dir).manifest
    schema = pq.read_schema(store_dir / "users.parquet")
    assert schema.field("user_id").type == pa.int64()
    assert schema.field("age").type == pa.string()
    assert schema.field("u_n_items").type == pa.float32()
    assert schema.metadata[b"recsys.feature_store"].decode() == manifest["version"]


def test_fingerprint_changes_with_the_data(tiny, tables, cutoff, tmp_path):
    other = build_feature_tables(tiny.interactions.iloc[10:], tiny.users, tiny.items, cutoff)
    a = write_feature_store(tables, tmp_path / "a", tiny.fingerprint())["version"]
    b = write_feature_store(other, tmp_path / "b", tiny.fingerprint())["version"]
    assert a != b


def test_lookup_returns_the_stored_rows_and_defaults_for_unknown_ids(store_dir, tables):
    store = load_feature_store(store_dir)
    frame = tables.users.set_index("user_id")
    ids = np.array([frame.index[3], -1, frame.index[0], 10**12], dtype=np.int64)
    got = store.users.lookup(ids)
    assert got.known.tolist() == [True, False, True, False]
    col = store.users.numeric_names.index("u_n_items")
    assert got.numeric[0, col] == frame["u_n_items"].iloc[3]
    assert got.numeric[2, col] == frame["u_n_items"].iloc[0]
    assert np.isnan(got.numeric[1]).all() and (got.categorical[3] == "unknown").all()
    assert got.categorical[0, store.users.categorical_names.index("age")] == frame["age"].iloc[3]
    empty = store.users.lookup(np.array([], dtype=np.int64))
    assert empty.numeric.shape == (0, len(store.users.numeric_names))


def test_empty_table_lookup_never_raises():
    table = OnlineFeatureTable.from_frame(pd.DataFrame({"item_id": pd.Series([], dtype=np.int64),
                                                        "x": pd.Series([], dtype=np.float32)}), "item_id")
    assert table.lookup(np.array([5])).known.tolist() == [False]


def test_store_refuses_mismatched_or_missing_files(store_dir, tmp_path, tables, tiny):
    with pytest.raises(FeatureStoreError, match="trained with"):
        load_feature_store(store_dir, expected_version="0000")
    other = tmp_path / "other"
    write_feature_store(build_feature_tables(tiny.interactions.iloc[5:], tiny.users, tiny.items, tables.as_of),
                        other, "x")
    (store_dir / "online.json").write_bytes((other / "online.json").read_bytes())  # the online arrays' index
    with pytest.raises(FeatureStoreError, match="online.json is damaged or belongs to another feature store"):
        load_feature_store(store_dir)
    (store_dir / "items.parquet").write_bytes((other / "items.parquet").read_bytes())
    with pytest.raises(FeatureStoreError, match="belongs to feature store version"):
        load_feature_store(store_dir)
    (store_dir / "items.parquet").unlink()
    with pytest.raises(FeatureStoreError, match="missing items.parquet"):
        load_feature_store(store_dir)


def test_point_in_time_no_leakage(tiny, tables, cutoff):
    """Anything at or after the cut-off (the label window) must not move a single feature value."""
    inter = tiny.interactions
    future = inter["last_watch_dt"] >= cutoff
    assert future.sum() > 100
    tampered = inter.copy()
    tampered.loc[future, "watched_pct"] = 0.0
    tampered.loc[future, "total_dur"] = 1e9
    item = inter["item_id"].iloc[-1]
    fresh_users = np.setdiff1d(inter["user_id"].unique(), inter.loc[inter["item_id"] == item, "user_id"])[:200]
    extra = pd.DataFrame({"user_id": fresh_users, "item_id": item, "last_watch_dt": cutoff + pd.Timedelta(days=1),
                          "total_dur": 100.0, "watched_pct": 50.0})
    tampered = pd.concat([tampered, extra], ignore_index=True)
    rebuilt = build_feature_tables(tampered, tiny.users, tiny.items, cutoff)
    pd.testing.assert_frame_equal(rebuilt.users, tables.users)
    pd.testing.assert_frame_equal(rebuilt.items, tables.items)


def test_aggregates_match_a_direct_count(tiny, tables, cutoff):
    past = tiny.interactions[tiny.interactions["last_watch_dt"] < cutoff]
    user = past["user_id"].value_counts().index[0]
    row = tables.users.set_index("user_id").loc[user]
    assert row["u_n_items"] == (past["user_id"] == user).sum()
    assert row["u_days_since_last"] == (cutoff - past.loc[past["user_id"] == user, "last_watch_dt"].max()).days
    item = past["item_id"].value_counts().index[0]
    irow = tables.items.set_index("item_id").loc[item]
    assert np.isclose(irow["i_pop"], np.log1p((past["item_id"] == item).sum()))
    week = past[past["last_watch_dt"] >= cutoff - pd.Timedelta(days=7)]
    assert np.isclose(irow["i_pop_7d"], np.log1p((week["item_id"] == item).sum()))


def test_online_arrays_are_mapped_and_answer_like_the_parquet_tables(store_dir, tables):
    """Serving maps the arrays the store wrote beside its Parquet files; a store written before them (no
    online.json) still loads, from Parquet, with the same answers."""
    mapped = load_feature_store(store_dir)
    assert not mapped.users.numeric.flags.writeable and not mapped.users.codes.flags.writeable
    for name in ("online.json", *(f"{t}.{a}.npy" for t in ("users", "items") for a in OnlineFeatureTable.ARRAYS)):
        (store_dir / name).unlink()
    read = load_feature_store(store_dir)
    assert read.users.numeric.flags.writeable
    ids = np.concatenate([tables.users["user_id"].to_numpy()[::7], [-1, 10**12]])
    for got, want in ((mapped.users.lookup(ids), read.users.lookup(ids)),
                      (mapped.items.lookup(ids), read.items.lookup(ids))):
        np.testing.assert_array_equal(got.numeric, want.numeric)
        assert got.categorical.tolist() == want.categorical.tolist() and got.known.tolist() == want.known.tolist()


def test_dismissed_shares_count_the_ratings_below_the_threshold_before_the_cutoff():
    """Item 10: liked by users 1 and 2, dismissed by user 3 (and by user 1 after the cut-off, not counted): 1/3.
    Item 20: liked once: 0. User 3 dismissed all they rated: 1; user 1 liked all before the cut-off: 0. A dataset
    without dismissed titles gets neither column."""
    day = pd.Timestamp("2021-01-01") + pd.to_timedelta(np.array([0, 1, 2, 3, 9]), unit="D")
    liked = pd.DataFrame({"user_id": [1, 2, 2], "item_id": [10, 10, 20], "last_watch_dt": day[:3],
                          "total_dur": 0.0, "watched_pct": 80.0})
    dismissed = pd.DataFrame({"user_id": [3, 1], "item_id": [10, 20], "last_watch_dt": day[3:]})
    users = pd.DataFrame({"user_id": [1, 2, 3], "age": "unknown", "income": "unknown", "sex": "M", "kids_flg": 0})
    items = pd.DataFrame({"item_id": [10, 20], "content_type": "film", "age_rating": "", "genres": "Drama",
                          "release_year": 1995.0, "for_kids": 0})
    tables = build_feature_tables(liked, users, items, day[3] + pd.Timedelta(days=1), dismissed)
    assert tables.items["i_dismissed_share"].tolist() == pytest.approx([1 / 3, 0.0])
    assert tables.users["u_dismissed_share"].tolist() == [0.0, 0.0, 1.0]
    without = build_feature_tables(liked, users, items, day[3] + pd.Timedelta(days=1))
    assert "i_dismissed_share" not in without.items and "u_dismissed_share" not in without.users
