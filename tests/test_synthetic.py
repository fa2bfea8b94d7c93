"""The built-in dataset is deterministic, in Kion's schema, and has the structure models should learn."""

from __future__ import annotations

import numpy as np
import pandas as pd

from data.schema import INTERACTION_COLUMNS, ITEM_COLUMNS, USER_COLUMNS
from data.synthetic import IDLE_SHARE, SIZES, generate


def test_same_seed_same_data_other_seed_other_data(tiny):
    assert generate("tiny", seed=7).fingerprint() == tiny.fingerprint()
    assert generate("tiny", seed=8).fingerprint() != tiny.fingerprint()


def test_kion_schema(tiny):
    assert list(tiny.interactions.columns[:5]) == INTERACTION_COLUMNS
    assert set(USER_COLUMNS) <= set(tiny.users.columns)
    assert set(ITEM_COLUMNS) <= set(tiny.items.columns)
    inter = tiny.interactions
    assert inter["user_id"].dtype == np.int64 and inter["item_id"].dtype == np.int64
    assert pd.api.types.is_datetime64_any_dtype(inter["last_watch_dt"])
    assert inter["watched_pct"].between(0, 100).all()
    assert not inter.duplicated(["user_id", "item_id"]).any()
    assert set(inter["item_id"]) <= set(tiny.items["item_id"])
    assert set(tiny.items["content_type"]) == {"film", "series"}
    assert tiny.users["age"].str.startswith("age_").all()


def test_sizes_match_the_brief():
    default, kion = SIZES["default"], SIZES["kion"]
    assert 10_000 <= default.n_users <= 99_999 and 1_000 <= default.n_items <= 9_999
    assert 100_000 <= default.n_users * default.mean_interactions < 1_000_000
    assert kion.n_users == 1_000_000 and kion.n_items == 15_000


def _joined(ds):
    return ds.interactions.merge(ds.users, on="user_id").merge(ds.items, on="item_id")


def test_kids_households_watch_kids_content_and_avoid_adult_titles(tiny):
    joined = _joined(tiny)
    kids_share = joined.groupby("kids_flg")["for_kids"].mean()
    assert kids_share[1] > 0.25 and kids_share[0] < 0.05
    adult_share = joined.assign(adult=joined["age_rating"] == "18+").groupby("kids_flg")["adult"].mean()
    assert adult_share[1] < adult_share[0]


def test_popularity_is_long_tailed(tiny):
    counts = tiny.interactions["item_id"].value_counts().to_numpy()
    top_decile = counts[: len(counts) // 10].sum() / counts.sum()
    assert top_decile > 0.3, top_decile


def test_age_bands_have_different_tastes(tiny):
    joined = _joined(tiny)
    anime = joined.assign(anime=joined["genres"].str.contains("anime")).groupby("age")["anime"].mean()
    assert anime["age_18_24"] > 2 * anime[["age_55_64", "age_65_inf"]].max()


def test_watched_pct_reflects_taste(tiny):
    """Users finish more of the titles in their own favourite genre than of other titles."""
    joined = _joined(tiny)
    joined["main_genre"] = joined["genres"].str.split(", ").str[0]
    favourite = joined.groupby("user_id")["main_genre"].agg(lambda s: s.value_counts().index[0]).rename("fav")
    joined = joined.join(favourite, on="user_id")
    heavy = joined.groupby("user_id")["item_id"].transform("size") >= 8
    match = joined.loc[heavy, "main_genre"] == joined.loc[heavy, "fav"]
    pct = joined.loc[heavy, "watched_pct"]
    assert pct[match].mean() > pct[~match].mean() + 3


def test_new_titles_arrive_during_the_log_and_peak_after_release(tiny):
    joined = _joined(tiny)
    start = joined["last_watch_dt"].min()
    first_watch = joined.groupby("item_id").agg(first=("last_watch_dt", "min"), year=("release_year", "first"))
    new, old = first_watch[first_watch["year"] == 2021], first_watch[first_watch["year"] < 2021]
    assert len(new) > 5
    assert (new["first"] - start).dt.days.median() > 20
    assert (old["first"] - start).dt.days.median() < 10


def test_users_table_lists_users_who_never_watched_anything(tiny):
    """Like Kion's users.csv: they are served their demographic segment's list, not global popularity."""
    idle = tiny.users[~tiny.users["user_id"].isin(tiny.interactions["user_id"])]
    assert len(idle) == SIZES["tiny"].n_users // IDLE_SHARE
    assert idle["age"].str.startswith("age_").all() and set(idle["kids_flg"]) == {0, 1}
