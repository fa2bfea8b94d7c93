"""What travels between the entry and the two model services: their answers' numpy arrays, as JSON-safe values.

Inside one `bentoml serve` a hop is pickled over a Unix socket. A model service on another host or in another
container is a `bentoml serve` of its own (topology `remote`), and BentoML's main servers take JSON only: they
refuse pickled bodies from the network, since unpickling a request would run the sender's code. So arrays
travel as ``{"__ndarray__": dtype, "shape": [...], "b64": raw bytes in base64}``: a few kB per user, encoded and
decoded without a Python loop over their values, and the same in every topology. Only numeric dtypes are
accepted back (an object array cannot come out of a buffer).
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

ARRAY = "__ndarray__"
NUMERIC_KINDS = "biuf"


def pack(answers: list[dict[str, Any]], **extra: object) -> list[dict[str, Any]]:
    """Each answer with its arrays encoded, and ``extra`` fields added (the model version)."""
    return [{**{key: _encode(value) for key, value in answer.items()}, **extra} for answer in answers]


def unpack(answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The inverse of :func:`pack`; fields that are not encoded arrays pass unchanged."""
    return [{key: decode(value) for key, value in answer.items()} for answer in answers]


def _encode(value: object) -> object:
    if not isinstance(value, np.ndarray):
        return value
    array = np.ascontiguousarray(value)
    return {ARRAY: array.dtype.str, "shape": list(array.shape), "b64": base64.b64encode(array.data).decode("ascii")}


def decode(value: object) -> object:
    if not (isinstance(value, dict) and ARRAY in value):
        return value
    dtype = np.dtype(value[ARRAY])
    if dtype.kind not in NUMERIC_KINDS:
        raise ValueError(f"refusing a {dtype} array on the wire: only numbers travel between the services")
    return np.frombuffer(base64.b64decode(value["b64"], validate=True), dtype=dtype).reshape(value["shape"])
