"""The arrays the entry and the model services exchange travel as JSON (a model service of its own refuses pickle)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recsys.serving import wire


def test_answers_survive_json_exactly():
    answers = [{"source": "reranked", "items": np.array([3, 1, 2], np.int64),
                "features": np.arange(12, dtype=np.float32).reshape(3, 4) / 7, "flags": np.array([[True, False]])},
               {"source": "global", "item_ids": np.zeros(0, np.int64)}]
    back = wire.unpack(json.loads(json.dumps(wire.pack(answers, model_version="v1"))))
    assert [a.pop("model_version") for a in back] == ["v1", "v1"]
    for sent, got in zip(answers, back, strict=True):
        assert sent.keys() == got.keys()
        for key, value in sent.items():
            if isinstance(value, np.ndarray):
                assert got[key].dtype == value.dtype and np.array_equal(got[key], value)
            else:
                assert got[key] == value


def test_only_numbers_are_decoded():
    packed = wire.pack([{"x": np.array([1.0])}])[0]["x"]
    with pytest.raises(ValueError, match="only numbers travel"):
        wire.decode({**packed, wire.ARRAY: "|O"})
