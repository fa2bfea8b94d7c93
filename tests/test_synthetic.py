"""The built-in dataset is deterministic, in Kion's schema, and has the structure models should learn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.data.schema import INTERACTION_COLUMNS, ITEM_COLUMNS, USER_COLUMNS, Dataset
from recsys.data.synthetic import IDLE_SHARE, SIZES, SyntheticConfig, generate


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
    assert SIZES["catalogue"].n_items == 1_000_000 and SIZES["catalogue"].pool  # the item index's size


def test_pooled_sampling_for_large_catalogues(monkeypatch):
    """Past what users x catalogue score matrices allow, each user scores a pool: still a valid log (no pair twice),
    popularity still long-tailed, and the long tail is watched too."""
    monkeypatch.setitem(SIZES, "pooled", SyntheticConfig(n_users=3_000, n_items=50_000, mean_interactions=12.0,
                                                         pool=400))
    data = generate("pooled", seed=3)  # validated by make_dataset: a repeated (user, item) pair would fail
    assert not data.interactions.duplicated(["user_id", "item_id"]).any()
    views = data.interactions["item_id"].value_counts()
    assert len(views) > 5_000  # many titles are watched at all (measured 11,562 of 50,000 for 36k views)
    assert views.iloc[: len(views) // 10].sum() / views.sum() > 0.3  # the top 10% take a large share (0.515)
    assert generate("pooled", seed=3).fingerprint() == data.fingerprint()


# Bounds on `structure` of the small dataset. Over 30 seeds (docs/quality-tests.md) each one lies 4 to 7.5 standard
# deviations from the statistic's mean and beyond every seed's value, and far from what data without that structure
# would give (0 for the differences and the log ratio; about the catalogue's 12% share of kids titles elsewhere).
STRUCTURE_SIZE = "small"
KIDS = 0.2          # measured 0.353 +- 0.030 (mean +- sd)
OTHER_KIDS = 0.03   # 0.0119 +- 0.0024
ADULT = 0.08        # 0.199 +- 0.027
TOP_DECILE = 0.38   # 0.465 +- 0.016; equal popularity would give about 0.1
ANIME = np.log(2)   # twice the share; 2.01 +- 0.29 (a ratio of 7.5)
WATCHED_PCT = 5     # 10.2 +- 1.1 percentage points
NEW_TITLES = 80     # 132 +- 11
NEW_LATER = 40      # 68 +- 6 days


def _joined(ds: Dataset) -> pd.DataFrame:
    return ds.interactions.merge(ds.users, on="user_id").merge(ds.items, on="item_id")


def structure(ds: Dataset) -> dict[str, float]:
    """Every statistic of the hidden structure that the tests below bound, for one dataset.

    The tests take them on the small size rather than the tiny one: with five times the users, their noise
    from seed to seed is about half as large, so the bounds can sit far from both the values and chance.
    """
    joined = _joined(ds)
    kids_share = joined.groupby("kids_flg")["for_kids"].mean()
    adult_share = joined.assign(adult=joined["age_rating"] == "18+").groupby("kids_flg")["adult"].mean()
    counts = ds.interactions["item_id"].value_counts().to_numpy()
    anime = joined.assign(anime=joined["genres"].str.contains("anime")).groupby("age")["anime"].mean()

    joined["main_genre"] = joined["genres"].str.split(", ").str[0]
    favourite = joined.groupby("user_id")["main_genre"].agg(lambda s: s.value_counts().index[0]).rename("fav")
    joined = joined.join(favourite, on="user_id")
    heavy = joined.groupby("user_id")["item_id"].transform("size") >= 8
    match = joined.loc[heavy, "main_genre"] == joined.loc[heavy, "fav"]
    pct = joined.loc[heavy, "watched_pct"]

    first_watch = joined.groupby("item_id").agg(first=("last_watch_dt", "min"), year=("release_year", "first"))
    first_day = (first_watch["first"] - joined["last_watch_dt"].min()).dt.days
    new = first_watch["year"] == 2021
    return {
        "kids share, kids minus other households": kids_share[1] - kids_share[0],
        "kids share, other households": kids_share[0],
        "18+ share, other minus kids households": adult_share[0] - adult_share[1],
        "top decile share of views": counts[: len(counts) // 10].sum() / counts.sum(),
        "log anime share ratio, 18-24 over 55+": np.log(anime["age_18_24"] / anime[["age_55_64", "age_65_inf"]].max()),
        "watched pct, favourite genre minus other": pct[match].mean() - pct[~match].mean(),
        "new titles watched": int(new.sum()),
        "median first day, new minus old titles": first_day[new].median() - first_day[~new].median(),
    }


@pytest.fixture(scope="module")
def stats() -> dict[str, float]:
    return structure(generate(STRUCTURE_SIZE, seed=7))


def test_kids_households_watch_kids_content_and_avoid_adult_titles(stats):
    assert stats["kids share, kids minus other households"] > KIDS
    assert stats["kids share, other households"] < OTHER_KIDS
    assert stats["18+ share, other minus kids households"] > ADULT


def test_popularity_is_long_tailed(stats):
    assert stats["top decile share of views"] > TOP_DECILE


def test_age_bands_have_different_tastes(stats):
    assert stats["log anime share ratio, 18-24 over 55+"] > ANIME


def test_watched_pct_reflects_taste(stats):
    """Users finish more of the titles in their own favourite genre than of other titles."""
    assert stats["watched pct, favourite genre minus other"] > WATCHED_PCT


def test_new_titles_arrive_during_the_log(stats):
    assert stats["new titles watched"] > NEW_TITLES
    assert stats["median first day, new minus old titles"] > NEW_LATER


def test_users_table_lists_users_who_never_watched_anything(tiny):
    """Like Kion's users.csv: they are served their demographic segment's list, not global popularity."""
    idle = tiny.users[~tiny.users["user_id"].isin(tiny.interactions["user_id"])]
    assert len(idle) == SIZES["tiny"].n_users // IDLE_SHARE
    assert idle["age"].str.startswith("age_").all() and set(idle["kids_flg"]) == {0, 1}
