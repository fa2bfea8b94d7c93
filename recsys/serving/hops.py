"""A pickled hop between two services of one `bentoml serve` goes out as one chunk, not one per numpy array.

BentoML 1.4.40 pickles a hop (``PickleSerde.serialize_value``) with protocol 5 and keeps each array's buffer out of
band, as a chunk of its own: a batch of N users' candidates is 2N+1 chunks, and their ranking 3N+1. The calling
side's aiohttp then writes every chunk to the socket with a system call of its own, and the answering side sends
each as an ASGI message of its own, through every middleware and uvicorn, one more system call each: ~3 writes per
user in the ranker and 2 in the candidates service (py-spy put ~10% of the entry's samples in aiohttp's writes).
The chunks are now joined into one before they are sent (a copy of a few hundred kB at most), with the same
``buffer-lengths`` header: the receiving side splits and unpickles them exactly as before, the arrays still not
copied out of the one buffer.

:func:`apply` patches ``PickleSerde.serialize_value``, pinned to the BentoML version it was written against like
recsys/serving/request_timer.py.
"""

from __future__ import annotations

from typing import Any

from _bentoml_impl.serde import Payload, PickleSerde

from recsys.serving.pins import written_for

WRITTEN_FOR = {"bentoml": "1.4.40"}


def apply() -> None:
    """Install the one-chunk payloads in this process (once), if BentoML is the version this was written for."""
    if not written_for(__name__, WRITTEN_FOR, lost="pickled calls between the services are written a chunk per "
                       "numpy array", check="PickleSerde.serialize_value and IterableResponse"):
        return
    serialize = PickleSerde.serialize_value
    if getattr(serialize, "one_chunk", False):
        return

    def serialize_in_one_chunk(self: PickleSerde, obj: Any) -> Payload:
        payload = serialize(self, obj)
        if len(payload.data) <= 1:
            return payload
        return Payload([b"".join(payload.data)], payload.metadata)

    serialize_in_one_chunk.one_chunk = True  # type: ignore[attr-defined]  # applied once per process
    PickleSerde.serialize_value = serialize_in_one_chunk  # the patch itself
