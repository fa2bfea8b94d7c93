"""How far above EASE any recommender can get on the MovieLens-shaped proxy: rank each held-out user's unseen
titles by the generator's own hidden model (the chance the user picks the title, likes it, and picks it late
enough to be held out) and score that ranking on the same holdout as `served_quality.py`.

The proxy (``movielens_like.py``) draws each user's titles from a fixed taste, with no order between them beyond
the user's active window and new titles' release, so this oracle is the best ranking the data allows; the gap
between it and EASE is all the two-stage model could ever gain there.

    .venv/bin/python scripts/proxy_ceiling.py --seed 42
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.stats import norm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recsys.columns import Columns  # noqa: E402
from recsys.data import synthetic  # noqa: E402
from recsys.data.export import write_movielens_100k  # noqa: E402
from recsys.data.movielens import load_movielens_100k  # noqa: E402
from recsys.data.schema import before_window  # noqa: E402
from recsys.settings import SplitSettings  # noqa: E402
from recsys.training.baselines import EASE_GRID, ease_recommend, ease_weights  # noqa: E402
from recsys.training.metrics import ranking_metrics  # noqa: E402
from recsys.training.split import split_interactions  # noqa: E402
from scripts.movielens_like import SHAPE  # noqa: E402

K = 10


def hidden_model(seed: int) -> tuple[pd.DataFrame, dict, pd.DataFrame, dict]:
    """The generator's items and users with their hidden parameters, drawn as `generate` draws them."""
    rng = np.random.default_rng(seed)
    items, item_hidden = synthetic._make_items(SHAPE, rng)
    users, user_hidden = synthetic._make_users(SHAPE, rng)
    return items, item_hidden, users, user_hidden


def oracle_scores(seed: int, user_ids: np.ndarray, item_ids: pd.Index, last_day: np.ndarray) -> dict[str, np.ndarray]:
    """users x items: the chance of a pick (exp of the generator's score), times the chance of 4+ stars, times the
    chance that the pick falls after the user's last known day."""
    items, ih, users, uh = hidden_model(seed)
    u = pd.Index(users[Columns.User]).get_indexer(user_ids)
    i = pd.Index(items[Columns.Item]).get_indexer(item_ids)
    taste, factors = uh["taste"][u], uh["factors"][u]
    genre, ifac = ih["genre"][i], ih["factors"][i]
    base = synthetic._item_base(ih)[:, i][uh["kids"][u].astype(int)]
    start, end = uh["start"][u, None].astype(float), uh["end"][u, None].astype(float)
    avail, new = ih["available_day"][i][None, :].astype(float), ih["is_new"][i][None, :]
    pick = 1.6 * taste @ genre.T + 2.5 * factors @ ifac.T + base
    pick = pick + np.where(new, synthetic._window_terms(start, end, avail, np.ones_like(new)), 0.0)
    liking = 0.9 * taste @ genre.T + 2.0 * factors @ ifac.T + 0.6 * ih["quality"][i][None, :]
    liked = norm.cdf((1.1 * liking - 1.2 - np.log(0.6 / 0.4)) / 1.2)  # pct > 60: 4 or 5 stars
    t0 = np.maximum(start, avail)
    x = np.clip((last_day[:, None] - t0) / np.maximum(end - t0 + 1.0, 1.0), 0.0, 1.0)
    late = np.where(new, (1.0 - x) ** 2.5, 1.0 - x)
    with np.errstate(over="ignore"):
        chosen = np.exp(pick)
    return {"pick": pick, "pick x liked": chosen * liked, "pick x liked x late": chosen * liked * late}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=42, help="the generator's seed (movielens_like.py --seed)")
    args = parser.parse_args()
    synthetic.SIZES["movielens-like"] = SHAPE
    with tempfile.TemporaryDirectory() as tmp:
        write_movielens_100k(synthetic.generate("movielens-like", seed=args.seed), Path(tmp))
        dataset = load_movielens_100k(Path(tmp))
    split = split_interactions(dataset.interactions, SplitSettings(), dataset.name)
    known, holdout = split.known_before_holdout, split.holdout
    items = pd.Index(dataset.items[Columns.Item].to_numpy())
    users = np.unique(holdout[Columns.User].to_numpy())
    everyone = pd.Index(np.unique(known[Columns.User]))
    users = users[everyone.get_indexer(users) >= 0]

    def matrix(frame: pd.DataFrame, rows: pd.Index) -> sp.csr_matrix:
        r, c = rows.get_indexer(frame[Columns.User]), items.get_indexer(frame[Columns.Item])
        ok = (r >= 0) & (c >= 0)
        return sp.csr_matrix((np.ones(int(ok.sum()), np.float32), (r[ok], c[ok])), shape=(len(rows), len(items)))

    seen, truth = matrix(known, pd.Index(users)), matrix(holdout, pd.Index(users))
    # what the served model excludes: the history and the titles rated below 4 stars before the holdout
    excluded = (seen + matrix(before_window(dataset.dismissed, holdout), pd.Index(users))).toarray() > 0
    # the raw log's days, without the loader's threshold: every rating, liked or not, says the user was active
    last_day = (known.groupby(Columns.User)[Columns.Datetime].max().reindex(users)
                - synthetic.START_DATE).dt.days.to_numpy(float)
    result = {}
    for name, scores in oracle_scores(args.seed, users, items, last_day).items():
        scores = np.where(excluded, -np.inf, scores)
        top = np.argsort(-scores, axis=1)[:, :K]
        result[name] = ranking_metrics(top, truth, len(items))[f"ndcg@{K}"]
    history = matrix(known, everyone)
    for name, hidden in (("ease, history filtered", None), ("ease, dismissed filtered too", sp.csr_matrix(excluded))):
        ndcg = {l2: ranking_metrics(ease_recommend(seen, ease_weights(history, l2), np.arange(len(items)), K,
                                                   excluded=hidden), truth, len(items))[f"ndcg@{K}"]
                for l2 in EASE_GRID}
        result[name] = max(ndcg.values())  # the best L2 weight on the holdout itself
    ease = result["ease, dismissed filtered too"]
    print(json.dumps({"seed": args.seed, "users": len(users), **{k: round(v, 4) for k, v in result.items()},
                      **{f"{k} vs ease (dismissed filtered)": f"{v / ease - 1:+.1%}" for k, v in result.items()}},
                     indent=1))


if __name__ == "__main__":
    main()
