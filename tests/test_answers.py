"""The entry renders its answers straight from the model services' arrays (recsys/serving/answers.py): the JSON must be
exactly what the documented pydantic response models give for the same answer."""

from __future__ import annotations

import json

import numpy as np

from recsys.core.candidates import SOURCES
from recsys.serving.answers import Answer, answer_json, batch_json
from recsys.serving.payloads import WARM
from recsys.serving.schemas import BatchResponse, RecommendResponse


def _documented(answer: Answer, version: str) -> RecommendResponse:
    """The same answer through the pydantic models, built the way the service built it before."""
    scores = answer.scores if answer.scores is not None else [None] * len(answer.item_ids)
    flags = answer.retrieved_by if answer.retrieved_by is not None else np.zeros((len(answer.item_ids), len(SOURCES)))
    return RecommendResponse(
        user_id=answer.user_id,
        recommendations=[{"item_id": int(i), "score": None if s is None else round(float(s), 6),
                          "source": answer.source, "retrieved_by": [name for name, on in zip(SOURCES, f, strict=True) if on]}
                         for i, s, f in zip(answer.item_ids, scores, flags, strict=True)],
        cold_start=answer.source != WARM, model_version=version)


def _answers() -> list[Answer]:
    rng = np.random.default_rng(3)
    scores = rng.normal(size=100).astype(np.float32)
    scores[:4] = [0.0, 1e-7, -2.5, 123456.789]
    return [
        Answer(7, rng.integers(0, 2**40, 100), scores, WARM, rng.random((100, len(SOURCES))) > 0.5),
        Answer(2**63 - 1, np.arange(5), None, "kids_segment"),
        Answer(0, np.array([], dtype=np.int64), None, "global"),
    ]


def test_answers_are_the_documented_json():
    for answer in _answers():
        rendered = json.loads(answer_json(answer, "v-1"))
        assert rendered == json.loads(_documented(answer, "v-1").model_dump_json())
        RecommendResponse.model_validate(rendered)


def test_batch_answers_are_the_documented_json():
    answers = _answers()
    expected = BatchResponse(results=[_documented(a, "v-1") for a in answers])
    assert json.loads(batch_json(answers, "v-1")) == json.loads(expected.model_dump_json())
