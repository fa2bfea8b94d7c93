"""What travels between the entry and the two model services: their answers' numpy arrays, raw or JSON-safe.

Inside one `bentoml serve` (topology `split`) a hop is pickled over a Unix socket, and with `fused` it is a call
in the same process: numpy arrays pass as they are. A model service on another host or in another container is a
`bentoml serve` of its own (topology `remote`), and BentoML's main servers take JSON only: they refuse pickled
bodies from the network, since unpickling a request would run the sender's code. There arrays must travel as
``{"__ndarray__": dtype, "shape": [...], "b64": raw bytes in base64}``: a few kB per user, encoded and decoded
without a Python loop over their values. Only numeric dtypes are accepted back (an object array cannot come out
of a buffer).

A model service cannot tell from its own settings which of these it serves (the stage containers in deploy/ set
no topology, and one batch may hold requests of several callers), so each request item says it: an entry that
takes raw arrays (``split``, ``fused``) sets :data:`RAW` to :data:`TAKES_RAW`; any other item, which is what a
`remote` entry, an older entry and any plain JSON client send, is answered JSON-safe. The mark is bytes, which
JSON has no form for, so a JSON caller cannot ask for arrays it could not be sent (``"raw_arrays": true`` gets
the JSON-safe answer, not a 500).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

ARRAY = "__ndarray__"
RAW = "raw_arrays"  # a request item's key: TAKES_RAW when its caller takes numpy arrays back (pickle or in process)
TAKES_RAW = b"numpy"
NUMERIC_KINDS = "biuf"


def pack(requests: Sequence[Mapping[str, Any]], answers: Sequence[Mapping[str, Any]],
         **extra: object) -> list[dict[str, Any]]:
    """Each answer as its request asked (arrays raw when it carries :data:`TAKES_RAW`, else encoded), with
    ``extra`` fields added (the model version)."""
    return [{**(answer if request.get(RAW) == TAKES_RAW else {key: _encode(value) for key, value in answer.items()}), **extra}
            for request, answer in zip(requests, answers, strict=True)]


def unpack(answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The inverse of :func:`pack`; fields that are not encoded arrays (raw arrays too) pass unchanged."""
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
