"""Time-based split into three windows: history, labels (for the reranker) and holdout (for evaluation).

``global`` cuts the whole log at two dates (the honest choice for Kion-style logs); ``per_user`` takes each
user's latest events (for logs such as MovieLens where users are active in short bursts years apart, so a
global window would hold few users). Either way nothing later than a window's start reaches the window before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from recsys.columns import Columns
from recsys.settings import SplitSettings

MIN_WINDOW_USERS = 10


class SplitError(ValueError):
    """The windows do not hold enough data to train or evaluate; the message says which setting to change."""


@dataclass
class Split:
    strategy: str
    history: pd.DataFrame
    labels: pd.DataFrame
    holdout: pd.DataFrame
    label_as_of: pd.Timestamp    # features for the reranker's training are computed as of here
    holdout_as_of: pd.Timestamp  # features for the offline evaluation are computed as of here

    @property
    def known_before_holdout(self) -> pd.DataFrame:
        return pd.concat([self.history, self.labels], ignore_index=True)

    def report(self) -> dict[str, Any]:
        def window(frame: pd.DataFrame) -> dict[str, Any]:
            return {
                "rows": len(frame),
                "users": int(frame[Columns.User].nunique()),
                "items": int(frame[Columns.Item].nunique()),
                "start": str(frame[Columns.Datetime].min().date()) if len(frame) else None,
                "end": str(frame[Columns.Datetime].max().date()) if len(frame) else None,
            }

        return {"strategy": self.strategy, "history": window(self.history), "labels": window(self.labels),
                "holdout": window(self.holdout), "label_as_of": str(self.label_as_of),
                "holdout_as_of": str(self.holdout_as_of)}


def default_strategy(dataset_name: str) -> str:
    return "per_user" if dataset_name.startswith("movielens") else "global"


def split_interactions(interactions: pd.DataFrame, settings: SplitSettings, dataset_name: str) -> Split:
    strategy = default_strategy(dataset_name) if settings.strategy == "auto" else settings.strategy
    split = _global_split(interactions, settings) if strategy == "global" else _per_user_split(interactions, settings)
    _check(split)
    return split


def _global_split(inter: pd.DataFrame, s: SplitSettings) -> Split:
    end = inter[Columns.Datetime].max().normalize() + pd.Timedelta(days=1)
    holdout_start = end - pd.Timedelta(days=s.holdout_days)
    label_start = holdout_start - pd.Timedelta(days=s.label_days)
    dates = inter[Columns.Datetime]
    return Split("global", inter[dates < label_start], inter[(dates >= label_start) & (dates < holdout_start)],
                 inter[dates >= holdout_start], label_start, holdout_start)


def _per_user_split(inter: pd.DataFrame, s: SplitSettings) -> Split:
    inter = inter.sort_values([Columns.User, Columns.Datetime, Columns.Item], kind="stable")
    n = inter.groupby(Columns.User)[Columns.Item].transform("size").to_numpy()
    position = inter.groupby(Columns.User).cumcount().to_numpy()
    n_holdout = np.ceil(n * s.holdout_frac).astype(int)
    n_label = np.ceil(n * s.label_frac).astype(int)
    splittable = n - n_holdout - n_label >= s.min_history
    window = np.where(~splittable | (position < n - n_holdout - n_label), 0, np.where(position < n - n_holdout, 1, 2))
    history, labels, holdout = (inter[window == w].sort_values(Columns.Datetime, kind="stable") for w in range(3))
    day = pd.Timedelta(days=1)
    label_as_of = history[Columns.Datetime].max() + day
    holdout_as_of = max(label_as_of, labels[Columns.Datetime].max() + day) if len(labels) else label_as_of
    return Split("per_user", history, labels, holdout, label_as_of, holdout_as_of)


def _check(split: Split) -> None:
    hints = {
        ("global", "history"): "shorten the later windows (--label-days / RECSYS_SPLIT__LABEL_DAYS, "
                               "--holdout-days / RECSYS_SPLIT__HOLDOUT_DAYS)",
        ("global", "labels"): "lengthen the label window (--label-days / RECSYS_SPLIT__LABEL_DAYS) "
                              "or use --split per_user",
        ("global", "holdout"): "lengthen the holdout window (--holdout-days / RECSYS_SPLIT__HOLDOUT_DAYS) "
                               "or use --split per_user",
        ("per_user", "history"): "lower --label-frac / --holdout-frac or RECSYS_SPLIT__MIN_HISTORY",
        ("per_user", "labels"): "raise --label-frac (RECSYS_SPLIT__LABEL_FRAC) or lower RECSYS_SPLIT__MIN_HISTORY",
        ("per_user", "holdout"): "raise --holdout-frac (RECSYS_SPLIT__HOLDOUT_FRAC) "
                                 "or lower RECSYS_SPLIT__MIN_HISTORY",
    }
    for name in ("history", "labels", "holdout"):
        frame = getattr(split, name)
        users = frame[Columns.User].nunique()
        if users < MIN_WINDOW_USERS:
            raise SplitError(f"the {name} window holds {len(frame)} interactions of {users} users "
                             f"(at least {MIN_WINDOW_USERS} users needed); {hints[(split.strategy, name)]}")
