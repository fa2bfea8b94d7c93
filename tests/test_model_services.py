"""What the two model services do per batch beyond the answer: nothing the first users after a start pay for, and
no feature summed that the pair's ranker does not read (issues 13 and 15)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from bentoml._internal.models import ModelStore
from numpy.testing import assert_array_equal

from recsys.core import model_store
from recsys.core.candidates import BATCH_FEATURES, CandidateModel
from recsys.core.reranker import FRAME_FROM_ROWS
from tests.helpers import ROOT, project_env
from tests.test_stored_lists import MIX, tied_model

# Built as a `bentoml serve` worker builds them (service.py's classes, in one process as the fused topology does),
# then the first real batch: 32 known users' candidates, then their ranking.
FIRST_BATCH = """
import json, sys
import numpy as np
import service
from recsys.serving import wire
candidates, ranker = service.Candidates(), service.Ranker()
users = candidates.model.user_ids[-32:]
queries = [{"user_id": int(u), "exclude_seen": True, "user_features": None, "raw_arrays": wire.TAKES_RAW} for u in users]
loaded = set(sys.modules)
found = candidates.answer(queries)
requests = [{**f, "user_id": q["user_id"], "top_k": 10, "raw_arrays": wire.TAKES_RAW}
            for f, q in zip(found, queries) if f["source"] == "reranked"]
ranker.answer(requests)
print(json.dumps({"rows": sum(len(r["items"]) for r in requests), "imported": sorted(set(sys.modules) - loaded)}))
"""


def test_the_first_batch_after_a_start_imports_nothing(trained_home):
    """Each model service runs made-up batches through its handler as it starts: the first real batch after it
    (here one CatBoost reads as a DataFrame) imports no module. Before, it imported pyarrow's pandas bridge (and
    paid first calls into CatBoost and numpy) in the first users' latency."""
    run = subprocess.run([sys.executable, "-c", FIRST_BATCH], env=project_env(trained_home), cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    first = json.loads(run.stdout.strip().splitlines()[-1])
    assert first["rows"] >= FRAME_FROM_ROWS  # the DataFrame path
    assert first["imported"] == []


def calls_to_ease_pair_scores(model: CandidateModel, monkeypatch) -> list[int]:
    calls: list[int] = []
    pair_scores = CandidateModel.ease_pair_scores

    def counted(self, *args, **kwargs):
        calls.append(1)
        return pair_scores(self, *args, **kwargs)

    monkeypatch.setattr(CandidateModel, "ease_pair_scores", counted)
    return calls


def test_ease_dismissed_is_not_summed_for_a_ranker_that_does_not_read_it(monkeypatch):
    """Bit for bit the same candidates and features, the ``ease_dismissed`` column 0, one sum over the pairs fewer
    (the stored lists' EASE feature is the other one)."""
    model = tied_model().with_stored_lists(MIX, block_bytes=60 * 8 * 700)
    skipping = tied_model().with_stored_lists(MIX, block_bytes=60 * 8 * 700)
    skipping.score_dismissed = False
    rows = np.arange(0, 600, 7)
    calls = calls_to_ease_pair_scores(model, monkeypatch)
    full = model.generate(rows, MIX)
    assert len(calls) == 2
    calls.clear()
    skipped = skipping.generate(rows, MIX)
    assert len(calls) == 1
    assert_array_equal(skipped.owner, full.owner)
    assert_array_equal(skipped.items, full.items)
    dismissed = BATCH_FEATURES.index("ease_dismissed")
    assert full.features[:, dismissed].any() and not skipped.features[:, dismissed].any()
    others = [j for j in range(len(BATCH_FEATURES)) if j != dismissed]
    assert_array_equal(skipped.features[:, others], full.features[:, others])


def test_the_ranker_metadata_says_which_features_it_reads(trained_home, monkeypatch):
    """The candidates service asks the pair's ranker (its metadata, checked against the CatBoost file at start-up);
    a pair it cannot find keeps every feature."""
    assert model_store.ranker_reads("no-such-version", "ease_dismissed")
    store = ModelStore(Path(trained_home) / "bentoml" / "models")
    ranker = store.list(model_store.RANKER)[0]
    monkeypatch.setattr(model_store, "get_model", lambda name, version: store.get(f"{name}:{version}"))
    version = str(ranker.tag.version)
    for feature in ranker.info.metadata["ranker_features"]:
        assert model_store.ranker_reads(version, feature)
    assert not model_store.ranker_reads(version, "no_such_feature")
