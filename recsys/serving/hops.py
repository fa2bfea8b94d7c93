"""A pickled hop between two services of one `bentoml serve` goes out as one chunk, not one per numpy array.

BentoML 1.4.40 pickles a hop (``PickleSerde.serialize_value``) with protocol 5 and keeps each array's buffer out of
band, as a chunk of its own: a batch of N users' candidates is 2N+1 chunks, and their ranking 3N+1. The calling
side's aiohttp then writes every chunk to the socket with a system call of its own, and the answering side sends
each as an ASGI message of its own, through every middleware and uvicorn, one more system call each: ~3 writes per
user in the ranker and 2 in the candidates service (py-spy put ~10% of the entry's samples in aiohttp's writes).
The chunks are now joined into one before they are sent (a copy of a few hundred kB at most), with the same
``buffer-lengths`` header: the receiving side splits and unpickles them exactly as before, the arrays still not
copied out of the one buffer.

The batches themselves are ``list[dict[str, Any]]`` (service.py's model services take and give them), and BentoML
dumps each through pydantic twice per hop on each side before pickling it: the caller's client to see whether the
input renders to text, then to pickle it; the model service to see whether its answer renders to text, then to
pickle it. For such a batch, pydantic's ``model_dump`` is a copy of every dict with the same values (``Any``
values pass as they are), ~4-5 us per user; 8 dumps per batch of two hops, ~1 ms per batch of 32 users spread over
the three processes. A model made of such batches only now dumps to the batches themselves: the same pickle, no
copies.

:func:`apply` patches ``PickleSerde.serialize_value`` and ``IODescriptor.model_dump``, pinned to the BentoML version
they were written against like recsys/serving/request_timer.py.
"""

from __future__ import annotations

from typing import Any

from _bentoml_impl.serde import Payload, PickleSerde
from _bentoml_sdk.io_models import IODescriptor  # type: ignore[import-untyped]  # BentoML ships this part untyped

from recsys.serving.pins import written_for

WRITTEN_FOR = {"bentoml": "1.4.40"}
BATCH = list[dict[str, Any]]  # what the model services take and give: dumped as it is


def apply() -> None:
    """Install the one-chunk payloads in this process (once), if BentoML is the version this was written for."""
    if not written_for(__name__, WRITTEN_FOR, lost="pickled calls between the services are written a chunk per "
                       "numpy array, and their batches copied by pydantic before pickling",
                       check="PickleSerde.serialize_value, IterableResponse and where BentoML dumps IODescriptor models"):
        return
    serialize = PickleSerde.serialize_value
    if getattr(serialize, "one_chunk", False):
        return
    IODescriptor.model_dump = batches_as_they_are(IODescriptor.model_dump)

    def serialize_in_one_chunk(self: PickleSerde, obj: Any) -> Payload:
        payload = serialize(self, obj)
        if len(payload.data) <= 1:
            return payload
        return Payload([b"".join(payload.data)], payload.metadata)

    serialize_in_one_chunk.one_chunk = True  # type: ignore[attr-defined]  # applied once per process
    PickleSerde.serialize_value = serialize_in_one_chunk  # the patch itself


def batches_as_they_are(model_dump: Any) -> Any:
    """``IODescriptor.model_dump`` that gives a model whose fields are all :data:`BATCH` (a model service's
    input, or its answer: an ``IORootModel``, whose dump is its ``root`` field's) with those fields as they are
    when dumped plainly (no options); any other model, or with options, is dumped as BentoML does."""
    batches: dict[type, tuple[str, ...]] = {}

    def dump(self: IODescriptor, **kwargs: Any) -> Any:
        cls = type(self)
        if (fields := batches.get(cls)) is None:
            annotations = {name: field.annotation for name, field in cls.model_fields.items()}
            fields = batches[cls] = tuple(annotations) if all(a == BATCH for a in annotations.values()) else ()
        if fields and not kwargs:
            return {name: getattr(self, name) for name in fields}
        return model_dump(self, **kwargs)

    return dump
