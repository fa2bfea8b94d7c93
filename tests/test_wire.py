"""The arrays the entry and the model services exchange: raw numpy arrays for a caller that asks (pickled or in
process), JSON-safe for the others (a model service of its own takes and gives JSON only)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recsys.serving import wire

ANSWERS = [{"source": "reranked", "items": np.array([3, 1, 2], np.int64),
            "features": np.arange(12, dtype=np.float32).reshape(3, 4) / 7, "flags": np.array([[True, False]])},
           {"source": "global", "item_ids": np.zeros(0, np.int64)}]


def _assert_same(sent: dict, got: dict) -> None:
    assert sent.keys() == got.keys()
    for key, value in sent.items():
        if isinstance(value, np.ndarray):
            assert got[key].dtype == value.dtype and np.array_equal(got[key], value)
        else:
            assert got[key] == value


@pytest.mark.parametrize("request_item", [{"user_id": 1}, {"user_id": 1, wire.RAW: None},
                                          {"user_id": 1, wire.RAW: True}, {"user_id": 1, wire.RAW: "numpy"}],
                         ids=["old-style, no mark", "marked none", "a JSON client's true", "a JSON string"])
def test_answers_survive_json_exactly_unless_raw_arrays_are_asked_for(request_item):
    back = wire.unpack(json.loads(json.dumps(wire.pack([request_item] * 2, ANSWERS, model_version="v1"))))
    assert [a.pop("model_version") for a in back] == ["v1", "v1"]
    for sent, got in zip(ANSWERS, back, strict=True):
        _assert_same(sent, got)


def test_a_caller_that_takes_arrays_gets_them_as_they_are():
    packed = wire.pack([{wire.RAW: wire.TAKES_RAW}] * 2, ANSWERS, model_version="v1")
    for sent, got in zip(ANSWERS, packed, strict=True):
        assert got.pop("model_version") == "v1"
        assert all(got[key] is value for key, value in sent.items())  # not copied, not encoded
    for sent, got in zip(ANSWERS, wire.unpack(packed), strict=True):
        _assert_same(sent, got)


def test_each_item_of_a_batch_is_answered_as_its_caller_asked():
    """A model service's batch can gather requests of several entries (BentoML's adaptive batching)."""
    raw, safe = wire.pack([{wire.RAW: wire.TAKES_RAW}, {}], [ANSWERS[0], ANSWERS[0]])
    assert isinstance(raw["items"], np.ndarray)
    assert safe["items"][wire.ARRAY] == "<i8" and json.loads(json.dumps(safe))["items"] == safe["items"]


def test_only_numbers_are_decoded():
    packed = wire.pack([{}], [{"x": np.array([1.0])}])[0]["x"]
    with pytest.raises(ValueError, match="only numbers travel"):
        wire.decode({**packed, wire.ARRAY: "|O"})
