"""The built-in dataset: a seeded, synthetic video-streaming log in the schema of the public Kion dataset.

It is generated from a hidden model of taste so that recommenders have something real to learn:

* users have genre tastes (logits) drawn around a prior of their age band and sex, plus latent factors;
* items have genres, a long-tailed (log-normal) popularity, a quality and latent factors;
* households with kids watch kids' content and avoid 18+ titles; other households rarely watch kids' content;
* items released during the log become available mid-window and get a novelty boost that fades;
* users are active in bursts (a start day and a window), so a global time split sees realistic churn;
* ``watched_pct`` grows with how much the user likes the item (taste match, latent match, quality).

Choices are sampled without replacement in proportion to exp(score) over user-chunk x catalogue weight
matrices (one matrix product, then a search per draw: no random number per user x title pair), so the default size
takes seconds and Kion's size (1M users, 15k items) a few minutes. Catalogues too
large for that (``pool``: the ``catalogue`` size's million items) score a pool per user instead: ``pool`` titles
drawn half by popularity and half uniformly, so the long tail is watched too, but rarely.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from recsys.columns import Columns
from recsys.data.schema import GENRE_SEPARATOR, Dataset, make_dataset

log = logging.getLogger(__name__)

START_DATE = pd.Timestamp("2021-03-13")

GENRES = [
    "drama", "comedy", "thriller", "action", "melodrama", "crime", "adventure", "horror", "sci-fi", "fantasy",
    "detective", "documentary", "cartoons", "kids", "family", "anime", "war", "history", "biography", "sport",
]
KIDS_GENRES = ["cartoons", "kids", "family", "adventure", "fantasy", "comedy"]
AGE_BANDS = ["age_18_24", "age_25_34", "age_35_44", "age_45_54", "age_55_64", "age_65_inf"]
AGE_PROBS = [0.16, 0.30, 0.25, 0.15, 0.09, 0.05]
INCOMES = ["income_0_20", "income_20_40", "income_40_60", "income_60_90", "income_90_150", "income_150_inf"]
INCOME_PROBS = [0.12, 0.40, 0.28, 0.13, 0.05, 0.02]
# How much each age band likes each genre (logit offsets): the demographics that should matter.
AGE_TASTE = {
    "age_18_24": {"anime": 1.5, "horror": 1.0, "action": 0.8, "sci-fi": 0.8, "comedy": 0.5, "documentary": -0.8},
    "age_25_34": {"action": 0.6, "thriller": 0.5, "comedy": 0.5, "sci-fi": 0.4, "crime": 0.3},
    "age_35_44": {"thriller": 0.5, "crime": 0.5, "drama": 0.4, "detective": 0.5},
    "age_45_54": {"drama": 0.7, "detective": 0.7, "melodrama": 0.5, "history": 0.4, "anime": -1.0},
    "age_55_64": {"drama": 0.8, "melodrama": 0.9, "history": 0.8, "war": 0.8, "documentary": 0.6, "anime": -1.5},
    "age_65_inf": {"war": 1.2, "history": 1.0, "documentary": 0.9, "melodrama": 0.8, "horror": -1.2, "anime": -2.0},
}
SEX_TASTE = {
    "M": {"action": 0.5, "war": 0.5, "sport": 0.6, "melodrama": -0.6},
    "F": {"melodrama": 0.7, "drama": 0.3, "action": -0.3},
}
COUNTRIES = ["Russia", "USA", "France", "United Kingdom", "Germany", "Japan", "South Korea", "Italy", "Spain", "India"]
WORDS_A = ["Silent", "Last", "Dark", "Golden", "Lost", "Hidden", "Broken", "Red", "Frozen", "Wild", "Secret", "Little",
           "Long", "Iron", "Bright", "Empty", "Crimson", "Distant", "Final", "Northern"]
WORDS_B = ["River", "Night", "Summer", "Kingdom", "Road", "Garden", "City", "Island", "Promise", "Storm", "Winter",
           "Station", "Heart", "Voyage", "Forest", "Shadow", "Letter", "Mountain", "Harbor", "Dream"]
FIRST = ["Anna", "Ivan", "Maria", "John", "Elena", "Pierre", "Yuki", "Sofia", "Marco", "Olga", "David", "Lena"]
LAST = ["Petrov", "Smith", "Ivanova", "Dubois", "Tanaka", "Rossi", "Garcia", "Kim", "Muller", "Novak", "Brown"]
DRAW_BLOCK = 64  # columns per block when drawing from a row of weights
IDLE_SHARE = 20  # users.csv also lists one user in 20 more who never watched anything


@dataclass(frozen=True)
class SyntheticConfig:
    n_users: int
    n_items: int
    mean_interactions: float
    days: int = 163
    n_factors: int = 8
    pool: int = 0  # titles scored per user; 0: the whole catalogue


SIZES: dict[str, SyntheticConfig] = {
    "tiny": SyntheticConfig(n_users=1_500, n_items=300, mean_interactions=12.0, days=120),
    "small": SyntheticConfig(n_users=8_000, n_items=1_000, mean_interactions=12.0),
    # the quality tests' size: large enough that the models' gaps stand well above seed-to-seed noise
    "medium": SyntheticConfig(n_users=20_000, n_items=2_000, mean_interactions=11.0),
    "default": SyntheticConfig(n_users=40_000, n_items=3_000, mean_interactions=11.0),
    "kion": SyntheticConfig(n_users=1_000_000, n_items=15_000, mean_interactions=5.5),
    # a million-title catalogue (the LightFM stage's nearest-neighbour index), small enough to train in minutes
    "catalogue": SyntheticConfig(n_users=50_000, n_items=1_000_000, mean_interactions=12.0, pool=2_000),
}


def _genre_matrix(genre_lists: list[list[str]]) -> np.ndarray:
    """Items x genres, each row summing to 1 (a title split evenly across its genres)."""
    index = {g: j for j, g in enumerate(GENRES)}
    matrix = np.zeros((len(genre_lists), len(GENRES)), dtype=np.float32)
    for i, genres in enumerate(genre_lists):
        for g in genres:
            matrix[i, index[g]] = 1.0 / len(genres)
    return matrix


def _make_items(cfg: SyntheticConfig, rng: np.random.Generator) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    n = cfg.n_items
    for_kids = rng.random(n) < 0.12
    genre_pop = rng.dirichlet(np.full(len(GENRES), 2.0))
    kids_idx = [GENRES.index(g) for g in KIDS_GENRES]
    genre_lists = []
    for kid in for_kids:
        k = rng.choice([1, 2, 3], p=[0.35, 0.45, 0.20])
        pool, probs = (kids_idx, None) if kid else (range(len(GENRES)), genre_pop)
        genre_lists.append([GENRES[j] for j in rng.choice(list(pool), size=k, replace=False, p=probs)])
    release_year = np.clip(2021 - np.floor(rng.exponential(7.0, n)), 1950, 2021).astype(int)
    is_new = release_year == 2021
    # 2021 titles arrive during the log; older titles are available from day one.
    available_day = np.where(is_new, rng.integers(0, cfg.days - 10, n), 0)
    horror_like = np.array([bool({"horror", "thriller", "crime"} & set(g)) for g in genre_lists])
    age_rating = np.where(
        for_kids, rng.choice(["0+", "6+"], n),
        np.where(horror_like, rng.choice(["16+", "18+"], n, p=[0.4, 0.6]),
                 rng.choice(["12+", "16+", "18+"], n, p=[0.4, 0.4, 0.2])),
    )
    series = rng.random(n) < 0.25
    item_ids = np.sort(rng.choice(np.arange(1, n * 7 + 1), size=n, replace=False))
    titles = [f"{WORDS_A[a]} {WORDS_B[b]}" + (f" {s}" if s > 1 else "")
              for a, b, s in zip(rng.integers(0, len(WORDS_A), n), rng.integers(0, len(WORDS_B), n),
                                 rng.choice([1, 1, 1, 2, 3], n), strict=True)]
    items = pd.DataFrame({
        Columns.Item: item_ids,
        Columns.ContentType: np.where(series, "series", "film"),
        Columns.Title: titles,
        Columns.ReleaseYear: release_year.astype(float),
        Columns.Genres: [GENRE_SEPARATOR.join(g) for g in genre_lists],
        Columns.Countries: rng.choice(COUNTRIES, n, p=np.array([10, 8, 2, 2, 1.5, 1.5, 1, 1, 1, 1]) / 29),
        Columns.ForKids: for_kids.astype(int),
        Columns.AgeRating: age_rating,
        Columns.Studios: rng.choice(["", "Studio One", "North Pictures", "Kion Originals", "Blue Frame"], n),
        Columns.Directors: [f"{FIRST[a]} {LAST[b]}"
                      for a, b in zip(rng.integers(0, len(FIRST), n), rng.integers(0, len(LAST), n), strict=True)],
    })
    hidden = {
        "genre": _genre_matrix(genre_lists),
        "log_pop": rng.normal(0.0, 1.3, n).astype(np.float32),
        "quality": rng.normal(0.0, 1.0, n).astype(np.float32),
        "factors": (rng.normal(0.0, 1.0, (n, cfg.n_factors)) / np.sqrt(cfg.n_factors)).astype(np.float32),
        Columns.ForKids: for_kids,
        "adult": age_rating == "18+",
        "available_day": available_day,
        "is_new": is_new,
        "duration": np.where(series, rng.integers(6, 16, n) * 2700, rng.normal(5600, 1200, n).clip(2400)).astype(np.float32),
    }
    return items, hidden


def _demographics(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Age band, sex and whether the household has kids (more likely at 25-44)."""
    age = rng.choice(AGE_BANDS, n, p=AGE_PROBS)
    sex = rng.choice(["M", "F"], n)
    kids_prob = np.select([np.isin(age, ["age_25_34", "age_35_44"]), age == "age_45_54"], [0.45, 0.25], 0.08)
    return age, sex, rng.random(n) < kids_prob


def _make_users(cfg: SyntheticConfig, rng: np.random.Generator) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    n = cfg.n_users
    age, sex, kids = _demographics(n, rng)
    taste = rng.normal(0.0, 1.0, (n, len(GENRES))).astype(np.float32)
    for band, offsets in AGE_TASTE.items():
        for genre, value in offsets.items():
            taste[age == band, GENRES.index(genre)] += value
    for s, offsets in SEX_TASTE.items():
        for genre, value in offsets.items():
            taste[sex == s, GENRES.index(genre)] += value
    activity = rng.lognormal(0.0, 0.9, n)
    n_events = np.maximum(1, np.round(activity / activity.mean() * cfg.mean_interactions)).astype(int)
    start = rng.integers(0, cfg.days, n)
    length = np.minimum(np.ceil(rng.exponential(45.0, n)).astype(int) + 3, cfg.days - 1 - start)
    users = pd.DataFrame({
        Columns.User: np.sort(rng.choice(np.arange(1, n * 2 + 1), size=n, replace=False)),
        Columns.Age: age,
        Columns.Income: rng.choice(INCOMES, n, p=INCOME_PROBS),
        Columns.Sex: sex,
        Columns.KidsFlg: kids.astype(int),
    })
    hidden = {
        "taste": taste,
        "factors": (rng.normal(0.0, 1.0, (n, cfg.n_factors)) / np.sqrt(cfg.n_factors)).astype(np.float32),
        "kids": kids,
        "n_events": np.minimum(n_events, cfg.n_items // 3),
        "start": start,
        "end": start + np.maximum(length, 0),
    }
    return users, hidden


def _idle_users(taken: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """Users who signed up and never watched anything (Kion's users.csv has them too): ids not ``taken``, the same
    demographics as everyone else."""
    n = max(1, len(taken) // IDLE_SHARE)
    age, sex, kids = _demographics(n, rng)
    return pd.DataFrame({
        Columns.User: np.sort(rng.choice(np.setdiff1d(np.arange(1, 2 * len(taken) + 1), taken), size=n, replace=False)),
        Columns.Age: age,
        Columns.Income: rng.choice(INCOMES, n, p=INCOME_PROBS),
        Columns.Sex: sex,
        Columns.KidsFlg: kids.astype(int),
    })


def _pool(n_users: int, size: int, items: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Per user, ``size`` distinct-or-masked item indices: half drawn by popularity, half uniformly (sorted, with
    repeats marked -1)."""
    weights = np.exp(items["log_pop"].astype(np.float64))
    n = len(weights)
    drawn = np.hstack([rng.choice(n, (n_users, size // 2), p=weights / weights.sum()),
                       rng.integers(0, n, (n_users, size - size // 2))])
    drawn.sort(axis=1)
    drawn[:, 1:][drawn[:, 1:] == drawn[:, :-1]] = -1
    return drawn


def _window_terms(start: np.ndarray, end: np.ndarray, avail: np.ndarray, is_new: np.ndarray) -> np.ndarray:
    """Log-odds from when a title is available against when the user is active: log of the share of the user's
    window the title is out in (-inf: never), plus a novelty boost for new titles that fades after release."""
    first_seen = np.maximum(start, avail)
    overlap = np.clip(end - first_seen + 1.0, 0.0, None) / (end - start + 1.0)
    novelty = np.where(is_new, 1.2 * np.exp(-(first_seen - avail) / 21.0), 0.0)
    with np.errstate(divide="ignore"):
        return (np.log(overlap) + novelty).astype(np.float32)


def _item_base(items: dict[str, np.ndarray]) -> np.ndarray:
    """The items' own log-odds, row 0 for households without kids and row 1 for households with kids."""
    base = 1.0 * items["log_pop"] + 0.5 * items["quality"]
    kids = np.where(items[Columns.ForKids], 1.8, 0.0) + np.where(items["adult"], -1.2, 0.0)
    others = np.where(items[Columns.ForKids], -2.5, 0.0)
    return np.stack([base + others, base + kids]).astype(np.float32)


def _chunk_weights(cfg: SyntheticConfig, users: dict[str, np.ndarray], items: dict[str, np.ndarray],
                   base: np.ndarray, lo: int, hi: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The columns (item indices) users ``lo:hi`` choose among and each choice's weight exp(score): one matrix
    product for taste and latent match over the whole catalogue, the availability terms only where they are not
    zero (titles released during the log); a pool per user for catalogues too large for that."""
    start = users["start"][lo:hi, None].astype(np.float32)
    end = users["end"][lo:hi, None].astype(np.float32)
    kids = users["kids"][lo:hi].astype(np.intp)
    avail = items["available_day"].astype(np.float32)
    if cfg.pool:  # each user's own columns: gather the items' attributes per (user, pool slot)
        cols = _pool(hi - lo, cfg.pool, items, rng)
        missing = cols < 0
        cols = np.where(missing, 0, cols)
        score = (np.einsum("ug,upg->up", 1.6 * users["taste"][lo:hi], items["genre"][cols])
                 + np.einsum("uf,upf->up", 2.5 * users["factors"][lo:hi], items["factors"][cols])
                 + np.take_along_axis(base[kids], cols, axis=1)
                 + _window_terms(start, end, avail[cols], items["is_new"][cols]))
        score[missing] = -np.inf
    else:  # one set of columns, the whole catalogue: the item terms ride along in the product (one-hot kids), and
        # the titles released during the log come last, so their availability terms go to one slice of columns
        cols = np.argsort(items["is_new"], kind="stable")[None, :]
        taste = np.hstack([1.6 * users["taste"][lo:hi], 2.5 * users["factors"][lo:hi], np.eye(2, dtype=np.float32)[kids]])
        score = taste @ np.ascontiguousarray(np.hstack([items["genre"], items["factors"], base.T])[cols[0]].T)
        new = cols[0, cfg.n_items - int(items["is_new"].sum()):]
        score[:, cfg.n_items - len(new):] += _window_terms(start, end, avail[None, new], np.ones((1, len(new)), bool))
    return cols, np.exp(score, out=score)


def _draw_without_replacement(weights: np.ndarray, n: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray,
                                                                                                     np.ndarray]:
    """Per row, ``n`` distinct columns drawn one after another with probability proportional to ``weights`` among
    those not drawn yet (at most as many as have a weight): (rows, columns), rows ascending.

    Drawing with replacement and dropping repeats gives exactly that sequence; a row still short after a round
    draws again with its drawn columns' weights set to zero, so every round gets at least one new column each.
    A draw picks a block of columns by the blocks' total weights, then a column within the block: one pass over
    the weights and a short search per draw, instead of a random number per (row, column) pair."""
    width = weights.shape[1]
    starts = np.arange(0, width, DRAW_BLOCK)
    out_rows: list[np.ndarray] = []
    out_cols: list[np.ndarray] = []
    have = np.zeros(len(n), dtype=np.int64)
    short = np.flatnonzero(n > 0)
    while len(short):
        sub = weights if len(short) == len(n) else weights[short]
        if out_rows:  # rows drawn before: their columns cannot come again
            rows, cols = np.concatenate(out_rows), np.concatenate(out_cols)
            taken = np.isin(rows, short)
            sub[np.searchsorted(short, rows[taken]), cols[taken]] = 0.0
        blocks = np.cumsum(np.add.reduceat(sub, starts, axis=1), axis=1, dtype=np.float64)
        left = blocks[:, -1] > 0  # a row with no weight left has drawn all it can
        if not left.all():
            short, sub, blocks = short[left], sub[left], blocks[left]
        flat = (blocks / blocks[:, -1:] + np.arange(len(short))[:, None]).ravel()  # row r's cdf lies in (r, r + 1]
        need = n[short] - have[short]
        local = np.repeat(np.arange(len(short)), 2 * need + 4)
        block = np.searchsorted(flat, local + rng.random(len(local)), side="right") - local * len(starts)
        block = np.minimum(block, len(starts) - 1)
        within = np.minimum(starts[block, None] + np.arange(DRAW_BLOCK), width - 1)
        cdf = np.cumsum(np.where(within < starts[block, None] + np.arange(DRAW_BLOCK),  # past the last column: 0
                                 0.0, sub[local[:, None], within]), axis=1)
        col = starts[block] + (cdf < rng.random(len(local))[:, None] * cdf[:, -1:]).sum(axis=1)
        _, first = np.unique(local * width + col, return_index=True)
        first.sort()  # the first time each (row, column) came up, in draw order
        local, col = local[first], col[first]
        rank = np.arange(len(local)) - np.searchsorted(local, local)
        keep = rank < need[local]
        rows = short[local[keep]]
        out_rows.append(rows)
        out_cols.append(col[keep])
        have += np.bincount(rows, minlength=len(n))
        short = short[have[short] < n[short]]
    if not out_rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    rows, cols = np.concatenate(out_rows), np.concatenate(out_cols)
    order = np.argsort(rows, kind="stable")
    return rows[order], cols[order]


def _sample_interactions(cfg: SyntheticConfig, users: dict[str, np.ndarray], items: dict[str, np.ndarray],
                         rng: np.random.Generator) -> pd.DataFrame:
    n_users = len(users["start"])
    width = cfg.pool or cfg.n_items
    chunk = max(64, 4_000_000 // width)
    base = _item_base(items)
    avail = items["available_day"].astype(np.float32)
    parts = []
    for lo in tqdm(range(0, n_users, chunk), desc="synthetic interactions", unit="chunk", leave=False,
                   disable=n_users < 50_000):
        hi = min(lo + chunk, n_users)
        cols, weights = _chunk_weights(cfg, users, items, base, lo, hi, rng)
        rows, slot = _draw_without_replacement(weights, np.minimum(users["n_events"][lo:hi], width // 3), rng)
        del weights
        item_idx = cols[rows if cfg.pool else 0, slot]
        user_idx = rows + lo
        t0 = np.maximum(users["start"][user_idx], avail[item_idx])
        t1 = users["end"][user_idx]
        # New titles are watched soon after release; the rest anywhere in the user's active window.
        frac = np.where(items["is_new"][item_idx], rng.beta(1.0, 2.5, len(rows)), rng.random(len(rows)))
        day = np.floor(t0 + frac * (t1 - t0 + 1.0)).clip(max=cfg.days - 1)
        affinity = np.einsum("pg,pg->p", users["taste"][user_idx], items["genre"][item_idx])
        latent = np.einsum("pf,pf->p", users["factors"][user_idx], items["factors"][item_idx])
        liking = 0.9 * affinity + 2.0 * latent + 0.6 * items["quality"][item_idx]
        pct = 100.0 / (1.0 + np.exp(-(1.1 * liking + rng.normal(-1.2, 1.2, len(rows)))))
        parts.append(pd.DataFrame({"user_row": user_idx, "item_row": item_idx, "day": day.astype(int),
                                   Columns.WatchedPct: np.round(pct).astype(np.float32)}))
    return pd.concat(parts, ignore_index=True)


def generator_version() -> str:
    """A hash of this module's source: the training cache's copy of a generated dataset is keyed on it."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def generate(size: str = "default", seed: int = 42) -> Dataset:
    """Generate the built-in dataset; the same ``size`` and ``seed`` always give the same tables."""
    if size not in SIZES:
        raise ValueError(f"unknown synthetic size {size!r}; choose one of {sorted(SIZES)}")
    cfg = SIZES[size]
    rng = np.random.default_rng(seed)
    items, item_hidden = _make_items(cfg, rng)
    users, user_hidden = _make_users(cfg, rng)
    events = _sample_interactions(cfg, user_hidden, item_hidden, rng)
    interactions = pd.DataFrame({
        Columns.User: users[Columns.User].to_numpy()[events["user_row"].to_numpy()],
        Columns.Item: items[Columns.Item].to_numpy()[events["item_row"].to_numpy()],
        Columns.Datetime: START_DATE + pd.to_timedelta(events["day"].to_numpy(), unit="D"),
        Columns.Duration: np.round(events[Columns.WatchedPct].to_numpy() / 100.0
                              * item_hidden["duration"][events["item_row"].to_numpy()]).astype(np.int64),
        Columns.WatchedPct: events[Columns.WatchedPct].to_numpy(),
    })
    # Like Kion, a few users never fill in their profile, and a few sign up and never watch anything. The idle
    # users are drawn last, so the rest of the dataset is the same as without them.
    users = pd.concat([users.sample(frac=0.95, random_state=seed), _idle_users(users[Columns.User].to_numpy(), rng)])
    users = users.sort_values(Columns.User).reset_index(drop=True)
    return make_dataset("synthetic", interactions, users, items, size=size, seed=seed)
