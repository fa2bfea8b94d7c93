"""The web page's data packed with a model pair: written at training time, read back for fast lookups."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recsys.core.showcase import ITEMS_FILE, SUMMARY_FILE, ShowcaseError, load_showcase, write_showcase

HISTORY = 4


@pytest.fixture(scope="module")
def packed(tiny, tmp_path_factory):
    items = tiny.items.copy()
    items.loc[0, "release_year"] = np.nan  # MovieLens titles can lack a year
    dataset = type(tiny)(tiny.name, tiny.interactions, tiny.users, items)
    directory = write_showcase(tmp_path_factory.mktemp("showcase"), dataset, HISTORY, {"metrics": {"rows": []}})
    return dataset, directory, load_showcase(directory)


def test_history_is_the_latest_interactions_newest_first_with_item_details(packed):
    dataset, _, showcase = packed
    inter = dataset.interactions
    user = int(inter["user_id"].value_counts().index[0])
    mine = inter[inter["user_id"] == user]
    answer = showcase.user(user)
    assert answer["watched"] == len(mine) > HISTORY
    assert len(answer["history"]) == HISTORY
    dates = [h["watched_at"] for h in answer["history"]]
    assert dates == sorted(dates, reverse=True)
    assert dates[0] == str(mine["last_watch_dt"].max().date())
    assert {h["item_id"] for h in answer["history"]} <= set(mine["item_id"])
    first = answer["history"][0]
    row = mine[mine["item_id"] == first["item_id"]].iloc[0]
    item = dataset.items.set_index("item_id").loc[first["item_id"]]
    assert first["title"] == item["title"] and ", ".join(first["genres"]) == item["genres"]
    assert first["watched_pct"] == pytest.approx(float(row["watched_pct"]))
    profile = dataset.users.set_index("user_id").loc[user]
    assert answer["profile"] == {"age": profile["age"], "sex": profile["sex"], "income": profile["income"],
                                 "kids_flg": int(profile["kids_flg"])}
    json.dumps(answer, allow_nan=False)


def test_unknown_ids_and_missing_values(packed):
    dataset, _, showcase = packed
    assert showcase.user(10**15) is None
    first, known = int(dataset.items["item_id"].iloc[0]), int(dataset.items["item_id"].iloc[1])
    details, unknown = showcase.item_details([known, 10**15, first])
    assert [d["item_id"] for d in details] == [known, first] and unknown == [10**15]
    assert details[1]["year"] is None and isinstance(details[0]["year"], int)
    no_profile = sorted(set(dataset.interactions["user_id"]) - set(dataset.users["user_id"]))[0]
    assert set(showcase.user(no_profile)["profile"].values()) == {None}
    json.dumps(details, allow_nan=False)


def test_summary_picker_and_demographics(packed):
    dataset, _, showcase = packed
    assert showcase.summary["history_items"] == HISTORY and showcase.summary["metrics"] == {"rows": []}
    assert showcase.summary["demographics"]["sex"] == sorted(dataset.users["sex"].unique())
    assert showcase.summary["demographics"]["kids_flg"] == [0, 1]
    sample = showcase.sample_users()
    assert len(sample) == len(set(sample)) > 5
    assert showcase.user(sample[0])["watched"] == dataset.interactions["user_id"].value_counts().max()
    assert showcase.new_user_id() not in set(dataset.interactions["user_id"])


def test_missing_or_damaged_showcase_is_a_clear_error(packed, tmp_path):
    _, directory, _ = packed
    with pytest.raises(ShowcaseError, match="trained before the web page existed"):
        load_showcase(tmp_path)
    for file in directory.iterdir():
        (tmp_path / file.name).write_bytes(file.read_bytes())
    (tmp_path / ITEMS_FILE).write_bytes(b"not arrow")
    with pytest.raises(ShowcaseError, match="items.arrow"):
        load_showcase(tmp_path)
    assert (tmp_path / SUMMARY_FILE).is_file()


def test_a_showcase_in_the_parquet_format_says_to_retrain(packed, tmp_path):
    """Pairs trained before the showcase was memory-mapped kept it as Parquet: the page says so, serving goes on."""
    _, directory, _ = packed
    (tmp_path / SUMMARY_FILE).write_bytes((directory / SUMMARY_FILE).read_bytes())
    (tmp_path / "items.parquet").write_bytes(b"PAR1")
    with pytest.raises(ShowcaseError, match="Parquet format of pairs trained before it was memory-mapped"):
        load_showcase(tmp_path)
