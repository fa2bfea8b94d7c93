"""The one settings object of the project.

Every knob lives here with a default that works out of the box. Any value can be overridden from the
environment with the ``RECSYS_`` prefix and ``__`` between levels, e.g. ``RECSYS_LIGHTFM__EPOCHS=5`` or
``RECSYS_DATA__SIZE=tiny``; the CLI sets the same fields from its flags. A ``RECSYS_*`` name that is not a
setting (``RECSYS_SERVING__TOPOLGY``) or a value that does not fit is a :class:`SettingsError` with one line that
names the variable, instead of a silently ignored typo or a pydantic traceback.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DatasetName = Literal["synthetic", "kion", "movielens-100k", "movielens-1m"]
SyntheticSize = Literal["tiny", "small", "medium", "default", "kion", "catalogue"]
SplitStrategy = Literal["auto", "global", "per_user"]

LogLevel = Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
                     BeforeValidator(lambda v: v.upper() if isinstance(v, str) else v)]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENV_PREFIX = "RECSYS_"


class SettingsError(ValueError):
    """A setting is unknown or invalid; the message names it and says what it should be."""


class DataSettings(BaseModel):
    dataset: DatasetName = "synthetic"
    data_dir: Path | None = Field(None, description="folder with a real dataset's files (not needed for synthetic)")
    size: SyntheticSize = Field("default", description="size preset of the built-in synthetic dataset")
    seed: int = 42
    rating_threshold: float = Field(4.0, description="MovieLens: ratings >= this count as positive interactions")


class SplitSettings(BaseModel):
    """Three consecutive windows: history (first level), labels (reranker targets), holdout (evaluation)."""

    strategy: SplitStrategy = Field(
        "auto", description="auto = global time cut for Kion-style logs, per-user for MovieLens"
    )
    label_days: int = Field(14, ge=1, description="global: length of the reranker's label window")
    holdout_days: int = Field(7, ge=1, description="global: length of the evaluation window")
    label_frac: float = Field(0.1, gt=0, lt=0.5, description="per_user: share of each user's latest events as labels")
    holdout_frac: float = Field(0.1, gt=0, lt=0.5, description="per_user: share of each user's latest events held out")
    min_history: int = Field(2, ge=1, description="per_user: users with fewer history events are not split")


class LightFMSettings(BaseModel):
    loss: Literal["warp", "bpr", "logistic", "warp-kos"] = "warp"
    no_components: int = Field(64, ge=2)
    epochs: int = Field(80, ge=1, description="with early_stopping, the most epochs (the count is the one that "
                                              "scored best on the validation window); without, exactly this many")
    early_stopping: bool = Field(True, description="pick the epoch count on the validation window: fit in steps, "
                                                   "keep the best state, stop after `patience` steps without gain")
    eval_every: int = Field(2, ge=1, description="early stopping: epochs per step")
    patience: int = Field(3, ge=1, description="early stopping: steps without a better validation score before stopping")
    early_stopping_users: int = Field(5_000, ge=10, description="early stopping: most validation users scored per step")
    max_interaction_epochs: int = Field(40_000_000, ge=1, description="bounds the epoch count on large data: a fit "
                                        "of N interactions trains at most this / N epochs (Kion's size: 9 "
                                        "epochs, each half a minute on 2 cores)")
    warm_epochs: int = Field(4, ge=0, description="the later fits (evaluation: history + labels; serving: all data) "
                                                  "go on from the previous fit's state for this many epochs; 0: "
                                                  "each fits from scratch for the epoch count found")
    learning_rate: float = Field(0.1, gt=0)
    item_alpha: float = Field(0.0, ge=0)
    user_alpha: float = Field(0.0, ge=0)
    max_sampled: int = Field(10, ge=1)
    threads: int = Field(2, ge=1, description="threads of a fit larger than reproducible_up_to")
    reproducible_up_to: int = Field(1_000_000, ge=0, description="fits of at most this many interactions run on one "
                                    "thread, so two runs with one seed train the same model: LightFM's "
                                    "multi-threaded SGD is Hogwild (unsynchronised updates), and two runs on two "
                                    "threads differ as much as two seeds. Below about a million interactions the "
                                    "second thread saves little (MovieLens-100k's size: nothing; the default "
                                    "size's 440k: ~0.6 s per epoch)")
    use_features: bool = Field(True, description="feed user demographics and item genres to LightFM")

    def threads_for(self, interactions: int) -> int:
        """LightFM's threads for a fit of ``interactions``: one (reproducible) up to ``reproducible_up_to``."""
        return 1 if interactions <= self.reproducible_up_to else self.threads


class CandidateSettings(BaseModel):
    n_lightfm: int = Field(100, ge=1, description="candidates per user from LightFM")
    n_popular: int = Field(30, ge=0, description="extra candidates from recent popularity")
    n_cooc: int = Field(30, ge=0, description="extra candidates from item-to-item co-occurrence")
    n_ease: int = Field(50, ge=0, description="extra candidates from EASE (catalogues up to ease_max_items)")
    ease_max_items: int = Field(20_000, ge=0, description="catalogues up to this many items keep EASE's items x items "
                                                           "float32 weights in the candidate model (100 MB at 5,000 "
                                                           "items, 900 MB at Kion's 15,000: memory-mapped, one copy "
                                                           "in the host's page cache; an inverse per first-level fit, "
                                                           "cubic in the items) as a candidate source and a reranker "
                                                           "feature; larger ones leave EASE out of the two-stage model")
    popularity_days: int = Field(14, ge=1, description="window for 'recently popular'")
    ann_min_items: int = Field(50_000, ge=1, description="catalogues of at least this many items get an approximate "
                                                          "nearest-neighbour index for the LightFM top-n (built at "
                                                          "training time); smaller ones score every item")
    ann_target_recall: float = Field(0.95, gt=0, le=1, description="recall@100 against exact search the index must "
                                                                  "reach: training searches more lists until it does")
    ann_nprobe: int = Field(32, ge=1, description="index lists searched per user to start from (more is slower and "
                                                  "closer to exact)")
    ann_recall_users: int = Field(1_000, ge=1, description="users on whom training measures the index's recall@100 "
                                                           "(stored in the model's metadata)")
    stored_lists: bool = Field(True, description="training stores every known user's LightFM and EASE top-n "
                               "(int16 item indices, ~300 bytes a user, memory-mapped) so that a request with the seen "
                               "filter reads them instead of scoring every item; false: neither built nor read, every "
                               "request computes them (catalogues with an item index never store them)")

    @property
    def mix(self) -> tuple[int, int, int, int]:
        """Candidates per source: the fields of :class:`recsys.core.candidates.Mix`."""
        return self.n_lightfm, self.n_popular, self.n_cooc, self.n_ease


class RankerSettings(BaseModel):
    loss: Literal["YetiRank", "Logloss", "PairLogit"] = "YetiRank"
    iterations: int = Field(600, ge=1)
    learning_rate: float = Field(0.08, gt=0)
    depth: int = Field(6, ge=1, le=12)
    early_stopping_rounds: int = Field(60, ge=1)
    validation_share: float = Field(0.2, gt=0, lt=1, description="share of label users for early stopping")
    max_train_users: int = Field(20_000, ge=10, description="cap on users used to train the reranker")
    negatives_per_user: int = Field(40, ge=1, description="negatives kept per user (all positives are kept)")
    served_windows: Literal[1, 2] = Field(2, description="label windows the served reranker learns from: 2, the "
                                      "label window and the holdout window (the latest, as the served first level "
                                      "sees it); 1, the label window only (then the reranker served is the one the "
                                      "offline metrics measured)")
    popularity_debias: float = Field(0.0, ge=0, le=1, description="a hit on a title with v views in the history "
                                                                 "counts 1 / (v + 1) ** this in the reranker's "
                                                                 "target (0: every hit counts the same; at Kion's "
                                                                 "size coverage_floor's penalty keeps more NDCG for "
                                                                 "the same coverage than this did)")
    coverage_floor: float = Field(0.5, ge=0, le=10, description="the reranked top-k lists rank by CatBoost's score "
                                  "less penalty x the percentile of the title's views, with the smallest penalty "
                                  "at which they show at least this share of the titles LightFM's own lists show "
                                  "(0: no penalty)")
    penalty_headroom: float = Field(0.1, ge=0, le=1, description="once lists need a penalty to reach coverage_floor, "
                                    "it aims at coverage_floor x (1 + this) on the users it is chosen on, so that "
                                    "the floor still holds on users it was "
                                    "not chosen on (at Kion's size the share moved by -0.7 to +2.1 points from the "
                                    "window's users to the holdout's)")
    threads: int = Field(2, ge=1)


class EvalSettings(BaseModel):
    k: int = Field(10, ge=1)
    ease_lambda: float | None = Field(None, gt=0, description="EASE's L2 weight; unset: the one that scores best on "
                                                              "the label window (so EASE is compared well tuned)")
    ease_tuning_users: int = Field(3_000, ge=10, description="most label-window users scored per EASE weight tried")
    ease_max_items: int = Field(20_000, ge=10, description="EASE inverts an items x items matrix: cap on its size")
    ease_tuning_items: int = Field(4_000, ge=10, description="the search for EASE's L2 weight runs on at most this "
                                                              "many of the most popular titles (one inverse per "
                                                              "weight tried, cubic in the titles)")
    max_users: int = Field(20_000, ge=10, description="cap on holdout users scored offline")


class ServingSettings(BaseModel):
    max_top_k: int = Field(100, ge=1, description="largest top_k a request may ask for")
    max_batch_users: int = Field(100, ge=1, description="largest number of users in one /recommend/batch call")
    model_version: str | None = Field(None, description="pin a trained model pair by version; default: latest")
    topology: Literal["split", "fused", "remote"] = Field(
        "split", description="split: entry, candidates and ranker services in three processes (scale each on its "
                             "own); fused: both models inside the entry process (no internal hops; fastest on a "
                             "small CPU machine); remote: the two model services are `bentoml serve`s of their own "
                             "(other containers or hosts), reached at candidates_url and ranker_url")
    candidates_url: str | None = Field(None, description="remote: the candidates service's address, e.g. "
                                                         "http://candidates:3000")
    ranker_url: str | None = Field(None, description="remote: the ranker service's address")
    workers: int = Field(1, ge=1, description="processes of the entry service (with `fused`, each holds both models)")
    batching: bool = Field(True, description="coalesce concurrent requests in the entry service, and adaptive "
                                             "batching in the two model services")
    max_batch_size: int = Field(64, ge=1, description="most users in one call to a model service")
    max_in_flight: int = Field(2, ge=1, description="batches the entry service keeps in flight at once")
    blas_threads: int = Field(1, ge=1, description="BLAS threads in the candidates service (one batch at a time)")
    dependency_timeout_s: float = Field(3.0, gt=0, description="wait this long for a model service, then answer 503")
    max_latency_ms: int = Field(5_000, ge=1, description="batching deadline; past it BentoML answers 503")
    cancel_request_timers: bool = Field(True, description="end BentoML 1.4.40's per-request timeout timer with the "
                                                          "request (recsys/serving/request_timer.py); off, every request's "
                                                          "objects live on for traffic.timeout (before/after runs)")
    read_ahead: bool = Field(True, description="read the model pair's files once as `bentoml serve` starts, so the "
                                               "memory-mapped per-user data is in the page cache before the first "
                                               "request (recsys/serving/page_cache.py)")
    freeze_startup_heap: bool = Field(True, description="gc.freeze() each service's start-up heap once its models "
                                                        "are loaded, so full collections skip it")
    gc_threshold: int = Field(10_000, ge=1, description="collector's generation-0 threshold in the service processes "
                                                       "(Python's default 700: the entry ran ~110 young and ~1 full "
                                                       "collection a second under load, of objects requests free by "
                                                       "themselves; recsys/serving/gc_watch.py)")
    access_log: Literal["errors", "all", "off"] = Field(
        "errors", description="the entry's access log (recsys/serving/access_log.py): errors, one INFO line per 4xx or "
                              "5xx answer; all, BentoML's line per request (client, method, path, status, sizes, "
                              "latency; costs entry CPU); off. /metrics counts requests by route and status either way")
    # Traffic (recsys/serving/traffic.py, connections.py, shutdown.py); limits are per entry worker.
    idle_timeout_s: float = Field(5.0, gt=0, description="a connection is closed when it has not sent a complete "
                                                         "request head this long after opening or after its last "
                                                         "answer (keep-alive timeout; also bounds slow headers)")
    body_timeout_s: float = Field(10.0, gt=0, description="a request body must arrive in full this long after its "
                                                          "head, or the answer is 408 and the connection is closed")
    max_uploads: int = Field(128, ge=1, description="bodies still arriving that are read at once (memory: this many "
                                                    "bodies of up to 1 MB); the others wait, within body_timeout_s")
    max_concurrency: int = Field(512, ge=1, description="requests being processed at once, once their body is in; "
                                                        "past it 429 (batch calls have their own lane)")
    max_batch_concurrency: int = Field(16, ge=1, description="/recommend/batch calls being processed or queued at "
                                                             "once; past it 429, so a flood of batches cannot use "
                                                             "up the single requests' capacity")
    batch_calls_in_flight: int = Field(1, ge=1, description="calls of /recommend/batch requests to the model "
                                                            "services at once, beside the single requests' own "
                                                            "max_in_flight: singles never queue behind big batches")
    request_timeout_s: float = Field(30.0, gt=0, description="a request whose answer has not started this long "
                                                             "after its body arrived gets 504")
    drain_timeout_s: float = Field(30.0, gt=0, description="on SIGTERM the entry stops accepting and waits at most "
                                                           "this long for its open connections to finish (each "
                                                           "gets its answer with Connection: close) before the "
                                                           "model services stop")

    @model_validator(mode="after")
    def _remote_stages_have_addresses(self) -> ServingSettings:
        missing = [name for name in ("candidates_url", "ranker_url") if getattr(self, name) is None]
        if self.topology == "remote" and missing:
            names = " and ".join(f"{ENV_PREFIX}SERVING__{name.upper()}" for name in missing)
            raise ValueError(f"topology 'remote' needs the model services' addresses: set {names}")
        for name in ("candidates_url", "ranker_url"):
            if (url := getattr(self, name)) and not url.startswith(("http://", "https://")):
                raise ValueError(f"{name} {url!r} is not an http:// or https:// address")
        return self


class UISettings(BaseModel):
    """The web page at /ui; its data is packed with the model pair at training time."""

    history_items: int = Field(20, ge=1, le=1_000, description="most recent interactions per user packed for the page")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid")

    home: Path = Field(PROJECT_ROOT / "var", description="where generated datasets, features and reports go")
    cache: bool = Field(True, description="keep finished training stages (the built-in dataset, the first-level "
                                          "fits) in cache_dir, keyed by what they were computed from, so a stopped "
                                          "`recsys train` started again does not redo them")
    cache_max_gb: float = Field(10.0, gt=0, description="most disk space the cache may take: past it the least "
                                                        "recently used entries are deleted (a Kion-size run leaves "
                                                        "about 2 GB)")
    log_level: LogLevel = "INFO"
    data: DataSettings = DataSettings()
    split: SplitSettings = SplitSettings()
    lightfm: LightFMSettings = LightFMSettings()
    candidates: CandidateSettings = CandidateSettings()
    ranker: RankerSettings = RankerSettings()
    eval: EvalSettings = EvalSettings()
    serving: ServingSettings = ServingSettings()
    ui: UISettings = UISettings()

    def single_threaded(self) -> Settings:
        """The same settings with LightFM and CatBoost on one thread each, for runs that must repeat bit for bit.

        LightFM's multi-threaded SGD is Hogwild (unsynchronised updates), so with several threads two runs of one
        seed differ; CatBoost is only guaranteed to repeat with the same thread count.
        """
        return self.model_copy(update={"lightfm": self.lightfm.model_copy(update={"threads": 1}),
                                       "ranker": self.ranker.model_copy(update={"threads": 1})})

    @property
    def features_dir(self) -> Path:
        return self.home / "features"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"


def env_names() -> list[str]:
    """Every environment variable the settings read: ``RECSYS_<FIELD>`` and ``RECSYS_<SECTION>__<FIELD>``."""
    names = []
    for name, field in Settings.model_fields.items():
        names.append(f"{ENV_PREFIX}{name.upper()}")
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            names += [f"{ENV_PREFIX}{name.upper()}__{sub.upper()}" for sub in field.annotation.model_fields]
    return names


def describe_errors(exc: ValidationError, name: Callable[[tuple[int | str, ...]], str]) -> str:
    """A validation error as one line: each wrong setting by ``name(loc)``, the value given and what it should be."""
    return "; ".join(f"{name(err['loc'])}={str(err['input'])[:40]!r}: {err['msg']}" for err in exc.errors())


def _env_name(loc: tuple[int | str, ...]) -> str:
    return ENV_PREFIX + "__".join(str(part).upper() for part in loc)


def _unknown_env_names(environ: Mapping[str, str]) -> list[str]:
    known = set(env_names())
    return sorted(n for n in environ if n.upper().startswith(ENV_PREFIX) and n.upper() not in known)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings from the environment, read once per process; :class:`SettingsError` on an unknown ``RECSYS_*``
    name (with the closest valid one) or a value that does not fit."""
    for name in _unknown_env_names(os.environ):
        close = difflib.get_close_matches(name.upper(), env_names(), n=1)
        hint = f"did you mean {close[0]}?" if close else "see `recsys/settings.py` for the settings there are"
        raise SettingsError(f"unknown setting {name}; {hint}")
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(f"invalid setting {describe_errors(exc, _env_name)}") from None
