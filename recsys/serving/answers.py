"""The entry's answers as JSON, written straight from the model services' arrays.

Building a /recommend/batch answer of 100 users x top_k 100 through the pydantic response models (10,000 dicts,
validated, then serialised) held the entry's event loop for ~22 ms per call; a flood of such calls queued every
single-user request behind them. Rendering from the arrays is ~15x cheaper, and batch answers are rendered in a
worker thread (service.py). The shape is exactly :class:`recsys.serving.schemas.RecommendResponse` and
:class:`recsys.serving.schemas.BatchResponse` (tests/test_answers.py compares the two renderings), which stay the
documented contract in /docs.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from recsys.core.candidates import SOURCES
from recsys.serving.payloads import WARM

# retrieved_by for each combination of the three source flags, as JSON (bit i set: SOURCES[i] proposed the item)
_SOURCE_LISTS = [json.dumps([s for bit, s in enumerate(SOURCES) if mask >> bit & 1]) for mask in range(2 ** len(SOURCES))]
_BITS = 1 << np.arange(len(SOURCES))


@dataclass(frozen=True)
class Answer:
    """One user's recommendations as the models returned them, best first."""

    user_id: int
    item_ids: np.ndarray
    scores: np.ndarray | None  # CatBoost's, for reranked answers; a cold start's popularity list has none
    source: str  # WARM (reranked) or the popularity list used for a cold start
    retrieved_by: np.ndarray | None = None  # (items, len(SOURCES)) flags, for reranked answers

    @property
    def cold_start(self) -> bool:
        return self.source != WARM


def answer_json(answer: Answer, model_version: str) -> str:
    """One ``RecommendResponse`` as JSON."""
    source = json.dumps(answer.source)
    lists = ([_SOURCE_LISTS[m] for m in (answer.retrieved_by @ _BITS).tolist()] if answer.retrieved_by is not None
             else [_SOURCE_LISTS[0]] * len(answer.item_ids))
    scores = ([repr(s) for s in np.round(answer.scores.astype(np.float64), 6).tolist()]  # as round(float(s), 6)
              if answer.scores is not None else ["null"] * len(answer.item_ids))
    items = ",".join([f'{{"item_id":{i},"score":{s},"source":{source},"retrieved_by":{by}}}'
                      for i, s, by in zip(answer.item_ids.tolist(), scores, lists, strict=True)])
    return (f'{{"user_id":{answer.user_id},"recommendations":[{items}],"status":"success","msg":null,'
            f'"cold_start":{json.dumps(answer.cold_start)},"model_version":{json.dumps(model_version)}}}')


def batch_json(answers: list[Answer], model_version: str) -> bytes:
    """One ``BatchResponse`` as JSON bytes."""
    results = ",".join([answer_json(a, model_version) for a in answers])
    return f'{{"results":[{results}],"status":"success","msg":null}}'.encode()
