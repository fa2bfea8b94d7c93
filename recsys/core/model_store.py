"""The two trained models in the BentoML model store, and the checks that they belong together.

A training run saves ``recsys_candidates:<run>`` (LightFM vectors and candidate sources as ``.npy``) and then
``recsys_ranker:<run>`` (CatBoost ``.cbm``, the feature-store snapshot it was trained for, with its online arrays
as ``.npy``, and the web page's showcase: catalogue, recent histories as Arrow IPC, report headline and plots, see
:mod:`recsys.core.showcase`). Serving memory-maps every per-user file (vectors, histories, features, showcase), so
the processes and workers on one host share a single copy in the page cache. Both carry the
same version, so the ranker's ``latest`` always names a complete pair: the ranker is written last, and
``bentoml.models.create`` only commits a model when its block finishes; if the ranker fails or the save is
interrupted, everything of that run is deleted again. An interrupted run leaves no half pair and never moves
``latest``. The ranker is only committed once the pair passes the checks serving runs, and saves of concurrent
trainings take turns (a lock file in the store), so both `latest` files name the same, servable pair. Serving
checks the pair it resolves (:func:`servable_version`) before it starts.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bentoml
import numpy as np
import yaml
from bentoml.exceptions import NotFound

from recsys.core.candidates import CANDIDATE_FEATURES, CandidateModel, load_array
from recsys.core.reranker import FeatureAssembler, Reranker, load_catboost
from recsys.features.store import FeatureStoreError, OnlineFeatureStore, check_feature_store, load_feature_store

CANDIDATES = "recsys_candidates"
RANKER = "recsys_ranker"
CANDIDATES_DIR = "candidates"
RANKER_FILE = "ranker.cbm"
FEATURES_DIR = "features"
SHOWCASE_DIR = "showcase"
ITEM_IDS_FILE = "item_ids.npy"

log = logging.getLogger("recsys")


class ModelStoreError(RuntimeError):
    """The store does not hold a usable, matching pair of models; the message says how to fix it."""


def store_home() -> str:
    return os.environ.get("BENTOML_HOME", str(Path.home() / "bentoml"))


def _train_hint() -> str:
    return f"run `recsys train` (or `make serve`) to create them (BENTOML_HOME={store_home()})"


def _retrain_hint() -> str:
    """For a pair that is there but unusable: `make serve` would not retrain (it only trains an empty store)."""
    return (f"run `recsys train` to write a new pair, or pin a good one with RECSYS_SERVING__MODEL_VERSION "
            f"(BENTOML_HOME={store_home()})")


def bento_version(source_dir: Path) -> str | None:
    """The ranker version recorded in a built Bento's bento.yaml (the source of a Bento lives in ``src/``)."""
    manifest = Path(source_dir).parent / "bento.yaml"
    if not manifest.exists():
        return None
    info = yaml.safe_load(manifest.read_text())
    tags = [str(m["tag"]) for svc in info.get("services", []) for m in svc.get("models", [])]
    versions = [t.split(":", 1)[1] for t in tags if t.startswith(f"{RANKER}:")]
    return versions[0] if versions else None


def _text(value: object) -> str | None:
    """A metadata value that should be a string (BentoML types metadata values as any JSON-like value)."""
    return None if value is None else str(value)


def resolve_version(pinned: str | None = None, source_dir: Path | None = None) -> str:
    """The pair to serve: the pinned version, else the one packed into this Bento, else the newest ranker."""
    pinned = pinned or (bento_version(source_dir) if source_dir else None)
    tag = f"{RANKER}:{pinned or 'latest'}"
    try:
        return str(bentoml.models.get(tag).tag.version)
    except NotFound:
        raise ModelStoreError(f"model {tag} is not in the BentoML model store; {_train_hint()}") from None


def get_model(name: str, version: str) -> bentoml.Model:
    try:
        return bentoml.models.get(f"{name}:{version}")
    except NotFound:
        raise ModelStoreError(
            f"model {name}:{version} is missing from the BentoML model store although {RANKER}:{version} is there; "
            f"the pair is incomplete, {_train_hint()}"
        ) from None


def _copy_files(source: Path, target: Path) -> None:
    target.mkdir()
    for file in Path(source).iterdir():
        (target / file.name).write_bytes(file.read_bytes())


@contextmanager
def _saving_lock() -> Iterator[None]:
    """One save at a time per store. BentoML moves a model's `latest` to the newest version as it commits, and
    deleting a version moves it back to the newest one left; two runs saving at once could leave the candidates'
    `latest` on one run and the ranker's on the other, or a failed run's clean-up could pick a half-written pair.
    Training itself runs in parallel; only the few seconds of saving and checking wait for each other."""
    path = Path(store_home()) / "recsys-save.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another training is saving to this store (%s); waiting for it", path)
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def save_pair(version: str, candidates: CandidateModel, ranker_file: Path, feature_dir: Path, showcase_dir: Path,
              labels: dict[str, str], metadata: dict[str, Any]) -> tuple[str, str]:
    """Write both models under one version; the ranker goes last so that `latest` is always a whole pair.

    The ranker is committed (and its `latest` moved) only after the pair passes the checks `bentoml serve` runs at
    start-up, and the committed pair is checked again; a pair that fails is removed with its one-line reason.
    """
    with _saving_lock():
        for name in (CANDIDATES, RANKER):
            if bentoml.models.list(f"{name}:{version}"):  # everything of `version` below is then this call's own
                raise ModelStoreError(f"model {name}:{version} already exists; train again to get a new version")
        try:
            with bentoml.models.create(f"{CANDIDATES}:{version}", labels={**labels, "stage": "candidates"},
                                       metadata=metadata) as model:
                candidates.save(Path(model.path_of(CANDIDATES_DIR)))
                candidates_tag = str(model.tag)
            log.info("saved %s; saving %s:%s", candidates_tag, RANKER, version)
            with bentoml.models.create(f"{RANKER}:{version}", labels={**labels, "stage": "ranker"},
                                       metadata=metadata) as model:
                Path(model.path_of(RANKER_FILE)).write_bytes(Path(ranker_file).read_bytes())
                np.save(model.path_of(ITEM_IDS_FILE), candidates.item_ids, allow_pickle=False)
                _copy_files(feature_dir, Path(model.path_of(FEATURES_DIR)))
                _copy_files(showcase_dir, Path(model.path_of(SHOWCASE_DIR)))
                _check_servable(get_model(CANDIDATES, version), model)
                ranker_tag = str(model.tag)
            _check_servable(get_model(CANDIDATES, version), get_model(RANKER, version))  # as committed
        except BaseException:
            _discard(version)
            raise
    return candidates_tag, ranker_tag


def _check_servable(candidates: bentoml.Model, ranker: bentoml.Model) -> None:
    """What `bentoml serve` checks at start-up, for a pair that is being saved."""
    try:
        check_pair(candidates, ranker)
        check_files(candidates, ranker)
    except ModelStoreError as exc:
        raise ModelStoreError(f"the new pair would not be served, so it was removed: {exc}") from exc


def _discard(version: str) -> None:
    """Delete whatever a failed or interrupted save left of ``version``: a committed candidates model (its
    `latest` moves back) and a model directory half-copied into the store, which BentoML only cleans up after an
    Exception, not after Ctrl-C or SIGTERM (which `recsys` turns into SystemExit)."""
    for name in (RANKER, CANDIDATES):
        with suppress(NotFound):
            bentoml.models.delete(f"{name}:{version}")


@dataclass
class RankerBundle:
    reranker: Reranker
    features: OnlineFeatureStore


@contextmanager
def _reading(model: bentoml.Model) -> Iterator[None]:
    """Whatever a damaged or missing file raises (ValueError, EOFError, OSError, CatBoostError, ArrowInvalid...)
    becomes one ModelStoreError naming the model, the problem and the fix."""
    try:
        yield
    except FeatureStoreError as exc:  # its message already says how to fix it
        raise ModelStoreError(f"model {model.tag}: {exc}") from exc
    except Exception as exc:
        raise ModelStoreError(f"model {model.tag} is damaged: {exc}; {_retrain_hint()}") from exc


def load_candidates(model: bentoml.Model, threads: int = 1, stored_lists: bool = True,
                    score_dismissed: bool = True) -> CandidateModel:
    """``threads``: the item index's search threads (serving runs one batch at a time per process);
    ``stored_lists=False``: every request computes its lists (the stored ones are not mapped);
    ``score_dismissed=False``: the ``ease_dismissed`` column is left 0 (see :func:`ranker_reads`)."""
    with _reading(model):
        return CandidateModel.load(Path(model.path_of(CANDIDATES_DIR)), mmap=True, threads=threads,
                                   stored_lists=stored_lists, score_dismissed=score_dismissed)


def ranker_reads(version: str, feature: str) -> bool:
    """Whether the ranker of pair ``version`` was trained on ``feature``, from its metadata (``ranker_features``,
    checked against the CatBoost file at start-up: :func:`check_files`); True when that cannot be told (no such
    model in this store, or metadata without the list), so a feature is only ever skipped when it is not read."""
    try:
        features = get_model(RANKER, version).info.metadata.get("ranker_features")
    except ModelStoreError:
        return True
    return not isinstance(features, list) or feature in features


def load_demographic_labels(model: bentoml.Model) -> dict[str, frozenset[str]]:
    with _reading(model):
        return CandidateModel.demographic_labels(Path(model.path_of(CANDIDATES_DIR)))


def load_ranker(model: bentoml.Model) -> RankerBundle:
    """CatBoost plus the feature store it was trained for, checked against the fingerprint in the metadata."""
    with _reading(model):
        features = load_feature_store(Path(model.path_of(FEATURES_DIR)),
                                      expected_version=_text(model.info.metadata.get("feature_store_version")))
        item_ids = load_array(Path(model.path_of(ITEM_IDS_FILE)), mmap=True)
        reranker = Reranker.load(Path(model.path_of(RANKER_FILE)), FeatureAssembler(features.users, features.items, item_ids))
    return RankerBundle(reranker, features)


def check_files(candidates: bentoml.Model, ranker: bentoml.Model) -> None:
    """Open every file the two model services will load, cheaply: the arrays are memory-mapped (headers and sizes
    checked, data not read), the Parquet files' footers and fingerprints are read, and the CatBoost model, which
    is small, is loaded and its features compared with the metadata."""
    with _reading(candidates):
        CandidateModel.load(Path(candidates.path_of(CANDIDATES_DIR)), mmap=True, map_index=True)
    with _reading(ranker):
        check_feature_store(Path(ranker.path_of(FEATURES_DIR)), _text(ranker.info.metadata.get("feature_store_version")))
        load_array(Path(ranker.path_of(ITEM_IDS_FILE)), mmap=True)
        model = load_catboost(Path(ranker.path_of(RANKER_FILE)))
        if list(model.feature_names_) != ranker.info.metadata.get("ranker_features"):
            raise ValueError(f"{RANKER_FILE} does not use the features listed in the model's metadata")
        if list(model.feature_names_[: len(CANDIDATE_FEATURES)]) != CANDIDATE_FEATURES:
            raise ValueError(f"{RANKER_FILE} was trained on the candidate features {model.feature_names_[:6]}... of an "
                             f"older version, not {CANDIDATE_FEATURES}")


def check_pair(candidates: bentoml.Model, ranker: bentoml.Model) -> None:
    """Refuse to serve two models that were not trained together."""
    a, b = candidates.info.metadata, ranker.info.metadata
    for key in ("run_id", "dataset_fingerprint", "feature_store_version"):
        if a.get(key) != b.get(key):
            raise ModelStoreError(
                f"{candidates.tag} and {ranker.tag} do not belong together ({key}: {a.get(key)!s} vs {b.get(key)!s}); "
                f"{_retrain_hint()}"
            )


def servable_version(pinned: str | None = None, source_dir: Path | None = None) -> str:
    """The pair to serve (see :func:`resolve_version`), once both models are known to be there, to belong together
    and to be readable.

    `bentoml serve` runs this when it imports the service, before any worker starts, so a bad store stops it at
    once. The same fault found later, when a model service loads its model in its own worker, would not: BentoML
    restarts that worker over and over while the other services answer.
    """
    version = resolve_version(pinned, source_dir)
    candidates, ranker = get_model(CANDIDATES, version), get_model(RANKER, version)
    check_pair(candidates, ranker)
    check_files(candidates, ranker)
    return version
