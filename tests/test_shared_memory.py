"""Per-user data is shared between processes, not copied into each (issue 15, item 2).

A model pair at the seed's size holds a million users' vectors, watch histories, features and showcase
histories. Training writes them as uncompressed ``.npy`` and Arrow IPC files into the model store entries, and
every service process maps them: N workers on a host share one copy in the page cache. These tests check the
files are there, that the loaded arrays are views of the mapped files (read-only, owning no memory), that each
service process of the real `bentoml serve` maps its per-user files, and that the served answers are the ones
the pair gave when it was read into memory the old way (Parquet features, arrays read whole).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from recsys.core import model_store
from recsys.core.candidates import CandidateModel, Mix
from recsys.core.reranker import FeatureAssembler, Reranker
from recsys.core.showcase import HISTORY_FILE, USERS_FILE, load_showcase
from recsys.features.store import TABLES, OnlineFeatureTable
from recsys.settings import get_settings
from recsys.tools.footprint import processes
from tests.helpers import expected, load_pair, post, warm_user

PER_USER_CANDIDATES = ("user_ids", "user_vectors", "seen_indptr", "seen_indices", "profile_user_ids", "stored_lightfm",
                       "stored_ease")
PER_USER_FEATURES = ("ids", "numeric", "codes")


def _entry(home: Path, name: str, version: str) -> Path:
    return home / "bentoml" / "models" / name / version


def _mapped(pid: int | str) -> set[str]:
    """Paths of the files process ``pid`` has mapped."""
    lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return {os.path.realpath(parts[5]) for parts in map(str.split, lines) if len(parts) > 5 and parts[5].startswith("/")}


@pytest.fixture(scope="module")
def version(server) -> str:
    return post(f"{server.url}/recommend", {"user_id": 0, "top_k": 1})[1]["model_version"]


def _per_user_files(home: Path, version: str) -> dict[str, list[str]]:
    """Each service's per-user files, as `bentoml serve` should map them."""
    candidates = _entry(home, model_store.CANDIDATES, version) / model_store.CANDIDATES_DIR
    ranker = _entry(home, model_store.RANKER, version)
    return {
        "candidates": [str(candidates / f"{name}.npy") for name in PER_USER_CANDIDATES],
        "ranker": [str(ranker / model_store.FEATURES_DIR / f"users.{a}.npy") for a in PER_USER_FEATURES],
        "recommender": [str(ranker / model_store.SHOWCASE_DIR / name) for name in (USERS_FILE, HISTORY_FILE)],
    }


def test_loaded_per_user_arrays_are_read_only_views_of_the_model_files(trained_home, version):
    """What serving loads (`models` in other tests): nothing of a user is copied into the process's heap."""
    candidates, reranker = load_pair(trained_home, version)
    users = reranker.assembler.users
    arrays = [getattr(candidates, n) for n in PER_USER_CANDIDATES] + [getattr(users, n) for n in PER_USER_FEATURES]
    assert all(not a.flags.owndata and not a.flags.writeable for a in arrays)
    showcase = load_showcase(_entry(trained_home, model_store.RANKER, version) / model_store.SHOWCASE_DIR)
    files = _per_user_files(trained_home, version)
    assert set(files["candidates"] + files["ranker"] + files["recommender"]) <= _mapped(os.getpid())
    assert showcase.user(warm_user((candidates, reranker)))["history"]


def test_every_service_process_maps_its_per_user_files(server, trained_home, version):
    """The real `bentoml serve` (split): the candidates, ranker and entry processes each map their files."""
    pids = server.service_pids()
    for service, files in _per_user_files(trained_home, version).items():
        assert pids[service], service
        for pid in pids[service]:
            assert set(files) <= _mapped(pid), (service, set(files) - _mapped(pid))


def test_answers_are_those_of_the_pair_read_into_memory(server, trained_home, version):
    """Served from the mapped files, over HTTP, the answers are the ones computed from the same pair read the
    way it was before the files were mapped: arrays read whole, features built from the Parquet tables, and
    every user's LightFM and EASE lists computed per request where serving reads the stored ones."""
    ranker_dir = _entry(trained_home, model_store.RANKER, version)
    read = CandidateModel.load(_entry(trained_home, model_store.CANDIDATES, version) / model_store.CANDIDATES_DIR,
                               stored_lists=False)
    assert load_pair(trained_home, version)[0].stored_lists_fit(read.served_mix(Mix(*get_settings().candidates.mix)))
    tables = {name: OnlineFeatureTable.from_frame(pq.read_table(ranker_dir / "features" / f"{name}.parquet").to_pandas(),
                                                  id_column) for name, id_column in TABLES.items()}
    reference = (read, Reranker.load(ranker_dir / model_store.RANKER_FILE,
                                     FeatureAssembler(tables["users"], tables["items"], read.item_ids)))
    assert read.user_vectors.flags.writeable  # read whole, the old way (a mapped array is read-only)
    for index in range(0, 40, 4):
        user = warm_user(reference, index)
        body = post(f"{server.url}/recommend", {"user_id": user, "top_k": 20})[1]
        items, scores = expected(reference, user, 20)
        assert [r["item_id"] for r in body["recommendations"]] == items
        assert [r["score"] for r in body["recommendations"]] == pytest.approx(scores, abs=1e-5)
    assert np.array_equal(read.user_vectors, load_pair(trained_home, version)[0].user_vectors)


def test_footprint_reads_rss_and_pss_of_each_service_process(server):
    """`recsys footprint`'s reading: RSS splits into shared and private pages, PSS into anonymous and file-backed,
    and no process's PSS exceeds its RSS."""
    measured = processes(server)
    assert {name.split("/")[0] for name in measured} == {"candidates", "ranker", "recommender"}
    for m in measured.values():
        assert 0 < m["pss"] <= m["rss"] and m["shared"] + m["private"] == pytest.approx(m["rss"], abs=0.3)
        assert m["anon"] + m["file"] == pytest.approx(m["pss"], abs=m["pss"] * 0.05)
