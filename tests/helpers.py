"""Real processes for end-to-end tests: train into a temporary store, start `bentoml serve` on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from bentoml._internal.models import ModelStore

from recsys.core import model_store
from recsys.core.candidates import CandidateModel
from recsys.core.reranker import Reranker
from recsys.serving.handlers import candidate_answers, rank_answers
from recsys.settings import PROJECT_ROOT as ROOT
from recsys.settings import get_settings
from recsys.tools.process import BIN, Server  # noqa: F401  (re-exported for the tests)


def project_env(home: Path, **extra: str) -> dict[str, str]:
    """Environment with a private BentoML store and project home under ``home``."""
    return {**os.environ, "BENTOML_HOME": str(home / "bentoml"), "RECSYS_HOME": str(home / "var"),
            "BENTOML_DO_NOT_TRACK": "True", **extra}


def train(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "recsys"), "train", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def post(url: str, body: object | bytes, content_type: str = "application/json",
         timeout: float = 30) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return _json_answer(urllib.request.Request(url, data=data, headers={"Content-Type": content_type},
                                               method="POST"), timeout)


def get(url: str, timeout: float = 30) -> tuple[int, dict]:
    return _json_answer(urllib.request.Request(url), timeout)


def _json_answer(request: urllib.request.Request, timeout: float) -> tuple[int, dict]:
    """Status and JSON body, for error statuses too."""
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def load_pair(home: Path, version: str) -> tuple[CandidateModel, Reranker]:
    """A stored model pair loaded by serving's own loaders from ``home``'s store, to compute expected answers
    in-process (this process's BentoML store is another one)."""
    store = ModelStore(Path(home) / "bentoml" / "models")
    candidates = model_store.load_candidates(store.get(f"{model_store.CANDIDATES}:{version}"))
    return candidates, model_store.load_ranker(store.get(f"{model_store.RANKER}:{version}")).reranker


def expected(models: tuple[CandidateModel, Reranker], user_id: int, top_k: int,
             exclude_seen: bool = True) -> tuple[list[int], list[float]]:
    """What the service should answer for a warm user, computed in-process by the same handlers."""
    candidates, reranker = models
    settings = get_settings()
    cand = candidate_answers(candidates, [{"user_id": user_id, "exclude_seen": exclude_seen}], settings.candidates,
                             settings.serving.max_top_k)[0]
    ranked = rank_answers(reranker, reranker.assembler.item_ids, [{"user_id": user_id, "top_k": top_k, **cand}])[0]
    return ranked["item_ids"].tolist(), ranked["scores"].tolist()


def warm_user(models: tuple[CandidateModel, Reranker], index: int = 0) -> int:
    """One of the users with the longest history."""
    candidates, _ = models
    heavy = np.argsort(-np.diff(candidates.seen_indptr), kind="stable")
    return int(candidates.user_ids[heavy[index]])
