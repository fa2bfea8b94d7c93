"""Time split into history / labels / holdout: consecutive disjoint windows, per-user latest events, clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.data.schema import before_window
from recsys.settings import SplitSettings
from recsys.training.split import MIN_WINDOW_USERS, SplitError, default_strategy, split_interactions

DAY = pd.Timedelta(days=1)


def frame(rows: list[tuple[int, int, str]]) -> pd.DataFrame:
    """Interactions in the project's schema from (user_id, item_id, date) triples."""
    users, items, dates = zip(*rows, strict=True)
    n = len(rows)
    return pd.DataFrame({
        "user_id": np.array(users, dtype=np.int64),
        "item_id": np.array(items, dtype=np.int64),
        "last_watch_dt": pd.to_datetime(list(dates)),
        "total_dur": np.full(n, 1000.0),
        "watched_pct": np.full(n, 50.0, dtype=np.float32),
    })


def assert_partition(split, interactions: pd.DataFrame) -> None:
    """The three windows are disjoint and their union is exactly the input (rows compared by index)."""
    parts = [split.history.index, split.labels.index, split.holdout.index]
    assert sum(len(p) for p in parts) == len(interactions)
    union = parts[0].append(parts[1]).append(parts[2])
    assert union.is_unique
    assert sorted(union) == sorted(interactions.index)
    rebuilt = pd.concat([split.history, split.labels, split.holdout]).sort_index()
    pd.testing.assert_frame_equal(rebuilt, interactions.sort_index())


# ---- global -------------------------------------------------------------------------------------------------

def test_auto_strategy_by_dataset_name():
    assert default_strategy("synthetic") == "global"
    assert default_strategy("kion") == "global"
    assert default_strategy("movielens-100k") == "per_user"
    assert split_interactions(_per_user_frame(), SplitSettings(), "movielens-1m").strategy == "per_user"


def test_global_windows_are_consecutive_and_disjoint(tiny):
    settings = SplitSettings(label_days=14, holdout_days=7)
    inter = tiny.interactions
    split = split_interactions(inter, settings, tiny.name)
    assert split.strategy == "global"
    assert_partition(split, inter)

    hist, lab, hold = (w["last_watch_dt"] for w in (split.history, split.labels, split.holdout))
    assert hist.max() < split.label_as_of <= lab.min()
    assert lab.max() < split.holdout_as_of <= hold.min()
    # the windows have exactly the configured lengths, ending the day after the last interaction
    end = inter["last_watch_dt"].max().normalize() + DAY
    assert split.holdout_as_of == end - pd.Timedelta(days=7)
    assert split.label_as_of == split.holdout_as_of - pd.Timedelta(days=14)
    assert hold.max() < end
    # every window is busy enough on the tiny dataset
    for window in (split.history, split.labels, split.holdout):
        assert window["user_id"].nunique() >= MIN_WINDOW_USERS
    assert split.known_before_holdout["last_watch_dt"].max() < split.holdout_as_of
    assert len(split.known_before_holdout) == len(split.history) + len(split.labels)


def test_global_window_lengths_follow_the_settings(tiny):
    short = split_interactions(tiny.interactions, SplitSettings(label_days=7, holdout_days=3), tiny.name)
    long = split_interactions(tiny.interactions, SplitSettings(label_days=21, holdout_days=10), tiny.name)
    assert long.holdout_as_of - short.holdout_as_of == pd.Timedelta(days=-7)
    assert short.holdout_as_of - short.label_as_of == pd.Timedelta(days=7)
    assert long.holdout_as_of - long.label_as_of == pd.Timedelta(days=21)
    assert len(long.holdout) > len(short.holdout) and len(long.history) < len(short.history)


def test_global_report_describes_the_windows(tiny):
    split = split_interactions(tiny.interactions, SplitSettings(), tiny.name)
    report = split.report()
    assert report["strategy"] == "global"
    assert report["history"]["rows"] + report["labels"]["rows"] + report["holdout"]["rows"] == len(tiny.interactions)
    assert report["labels"]["start"] == str(split.label_as_of.date())
    assert report["holdout"]["start"] == str(split.holdout_as_of.date())
    assert report["history"]["end"] < report["labels"]["start"] <= report["labels"]["end"] < report["holdout"]["start"]


def test_global_split_with_empty_label_window_names_the_setting():
    # 12 users active on days 1-5, then nothing for weeks, then 12 users in the last week:
    # with label_days=14 / holdout_days=7 the label window (days 25-38) is empty.
    start = pd.Timestamp("2024-01-01")
    rows = [(u, i, str((start + DAY * d).date())) for u in range(12) for i, d in enumerate(range(1, 6))]
    rows += [(u, 100 + u, str((start + DAY * 40).date())) for u in range(12)]
    inter = frame(rows)
    with pytest.raises(SplitError) as info:
        split_interactions(inter, SplitSettings(label_days=14, holdout_days=7), "synthetic")
    message = str(info.value)
    assert "labels window holds 0 interactions" in message
    assert "RECSYS_SPLIT__LABEL_DAYS" in message
    # lengthening the label window, as the message says, fixes it
    # (holdout starts on day 34: 30 label days reach back to day 4, leaving days 1-3 as history)
    ok = split_interactions(inter, SplitSettings(label_days=30, holdout_days=7), "synthetic")
    assert (len(ok.history), len(ok.labels), len(ok.holdout)) == (36, 24, 12)


def test_global_split_with_too_few_holdout_users_raises():
    # 12 users over days 0-30 (history and labels are busy), but only 3 users in the 7-day holdout window
    start = pd.Timestamp("2024-01-01")
    rows = [(u, d, str((start + DAY * d).date())) for u in range(12) for d in range(0, 31, 3)]
    rows += [(u, 99, str((start + DAY * 37).date())) for u in range(3)]
    with pytest.raises(SplitError, match="the holdout window holds 3 interactions of 3 users") as info:
        split_interactions(frame(rows), SplitSettings(label_days=14, holdout_days=7), "kion")
    assert "RECSYS_SPLIT__" in str(info.value)


# ---- per user -----------------------------------------------------------------------------------------------

def _per_user_frame() -> pd.DataFrame:
    """12 users with 10 events each on distinct days, 3 users with only 3 events."""
    start = pd.Timestamp("2024-01-01")
    rows = []
    for u in range(12):
        for j in range(10):
            rows.append((u, (u * 7 + j * 3) % 50, str((start + DAY * (u + 2 * j)).date())))
    for u in range(100, 103):
        for j in range(3):
            rows.append((u, j, str((start + DAY * (5 * j)).date())))
    return frame(rows).sample(frac=1.0, random_state=0)  # the split must not rely on the input order


def test_per_user_holdout_is_each_users_latest_events():
    inter = _per_user_frame()
    split = split_interactions(inter, SplitSettings(strategy="per_user"), "synthetic")
    assert split.strategy == "per_user"
    assert_partition(split, inter)
    for user, events in inter.groupby("user_id"):
        dates = events.sort_values("last_watch_dt")["last_watch_dt"]
        hist = split.history[split.history["user_id"] == user]["last_watch_dt"]
        lab = split.labels[split.labels["user_id"] == user]["last_watch_dt"]
        hold = split.holdout[split.holdout["user_id"] == user]["last_watch_dt"]
        if user < 100:
            # ceil(10 * 0.1) = 1 holdout, 1 label, 8 history events: the latest is held out, the one before labels
            assert (len(hist), len(lab), len(hold)) == (8, 1, 1)
            assert hold.iloc[0] == dates.iloc[-1]
            assert lab.iloc[0] == dates.iloc[-2]
            assert hist.max() < lab.min() <= lab.max() < hold.min()
        else:
            # 3 events: 3 - 1 - 1 = 1 < min_history = 2, so the user stays whole in history
            assert (len(hist), len(lab), len(hold)) == (3, 0, 0)
    assert split.label_as_of == split.history["last_watch_dt"].max() + DAY
    assert split.holdout_as_of >= split.label_as_of
    assert split.holdout_as_of > split.labels["last_watch_dt"].max()


def test_per_user_fractions_and_min_history():
    inter = _per_user_frame()
    split = split_interactions(inter, SplitSettings(strategy="per_user", label_frac=0.2, holdout_frac=0.3),
                               "synthetic")
    # 10 events: ceil(3) holdout, ceil(2) labels, 5 history; the 3-event users stay whole
    counts = {name: getattr(split, name).groupby("user_id").size() for name in ("history", "labels", "holdout")}
    assert (counts["holdout"] == 3).all() and (counts["labels"] == 2).all()
    assert counts["history"].loc[:11].eq(5).all() and counts["history"].loc[100:].eq(3).all()
    # lowering min_history to 1 lets the 3-event users split too (1 history, 1 label, 1 holdout)
    loose = split_interactions(inter, SplitSettings(strategy="per_user", min_history=1), "synthetic")
    assert loose.holdout["user_id"].nunique() == 15
    assert loose.history.groupby("user_id").size().loc[100:].eq(1).all()


def test_per_user_split_of_tiny_keeps_every_users_order(tiny):
    split = split_interactions(tiny.interactions, SplitSettings(strategy="per_user"), tiny.name)
    assert_partition(split, tiny.interactions)
    last_hist = split.history.groupby("user_id")["last_watch_dt"].max()
    first_lab = split.labels.groupby("user_id")["last_watch_dt"].min()
    last_lab = split.labels.groupby("user_id")["last_watch_dt"].max()
    first_hold = split.holdout.groupby("user_id")["last_watch_dt"].min()
    assert (last_hist.reindex(first_lab.index) <= first_lab).all()
    assert (last_lab.reindex(first_hold.index) <= first_hold).all()
    assert set(first_hold.index) == set(first_lab.index)  # a split user gets both windows
    # users too short to split are whole in history
    n = tiny.interactions.groupby("user_id").size()
    short = n[n - 2 * np.ceil(n * 0.1) < 2].index
    assert not split.holdout["user_id"].isin(short).any() and not split.labels["user_id"].isin(short).any()


def test_per_user_split_with_empty_label_window_names_the_setting():
    # 12 users with 3 events each: 3 - 1 - 1 < min_history = 2, so nobody is split and the labels are empty
    start = pd.Timestamp("2024-01-01")
    inter = frame([(u, j, str((start + DAY * (u + j)).date())) for u in range(12) for j in range(3)])
    with pytest.raises(SplitError) as info:
        split_interactions(inter, SplitSettings(strategy="per_user"), "synthetic")
    assert "labels window holds 0 interactions" in str(info.value)
    assert "RECSYS_SPLIT__MIN_HISTORY" in str(info.value)


def test_before_window_keeps_each_users_rows_before_their_first_event_in_it():
    """Per user: user 1's window starts on day 5, so their day-5 and day-7 rows go; user 2 has no window event."""
    day = pd.Timestamp("2021-01-01") + pd.to_timedelta(np.array([1, 5, 7, 9]), unit="D")
    frame = pd.DataFrame({"user_id": [1, 1, 1, 2], "item_id": [10, 20, 30, 40], "last_watch_dt": day})
    window = pd.DataFrame({"user_id": [1, 1], "item_id": [50, 60], "last_watch_dt": day[[2, 1]]})
    assert before_window(frame, window)["item_id"].tolist() == [10, 40]
