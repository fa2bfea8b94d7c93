"""Per-request and per-call work that serves nothing is not done (issue 13): an answer goes to the socket in one
write, not a head and a body apart (recsys/serving/connections.py; driven through the protocol uvicorn runs in
every service process, on a stand-in transport that records each write), and a pickled call between the services
is one chunk, not one per numpy array (recsys/serving/hops.py). What is counted is calls, not time."""

from __future__ import annotations

import asyncio
import json
import subprocess
from typing import Any

import bentoml
import numpy as np
from _bentoml_impl.serde import Payload, PickleSerde
from pydantic import BaseModel
from uvicorn.config import Config
from uvicorn.server import ServerState

from recsys.serving import hops
from recsys.serving.connections import GuardedHttpToolsProtocol
from tests.helpers import BIN, ROOT, project_env


class RecordingTransport(asyncio.Transport):
    """What uvicorn's protocol calls on a socket's transport; each write call is one `send` on a real one."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[bytes] = []
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 3000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.calls.append(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self.calls.append(b"".join(list_of_data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _answer(app: Any, request: bytes) -> RecordingTransport:
    config = Config(app=app, lifespan="off", log_config=None)
    protocol = GuardedHttpToolsProtocol(config, ServerState(), {}, _loop=asyncio.get_running_loop())
    transport = RecordingTransport()
    protocol.connection_made(transport)
    protocol.data_received(request)
    while protocol.cycle is None or not protocol.cycle.response_complete:
        await asyncio.sleep(0)
    if protocol.timeout_keep_alive_task is not None:
        protocol.timeout_keep_alive_task.cancel()
    return transport


async def _json_app(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    body = b'{"ok":true}'
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _streamed_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    for part in (b"one", b"two"):
        await send({"type": "http.response.body", "body": part, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


def test_an_answer_goes_to_the_socket_in_one_write():
    """Regression: uvicorn wrote the head and the body in two `send` calls (two TCP segments on loopback, each
    waking the client)."""
    transport = asyncio.run(_answer(_json_app, b"POST /recommend HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}"))
    assert len(transport.calls) == 1, transport.calls
    head, body = transport.calls[0].split(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"content-length: 11" in head and body == b'{"ok":true}'
    assert not transport.closed  # kept alive


def test_a_streamed_answer_keeps_its_head_and_chunks_in_order():
    transport = asyncio.run(_answer(_streamed_app, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"))
    whole = b"".join(transport.calls)
    assert whole.startswith(b"HTTP/1.1 200 OK") and b"transfer-encoding: chunked" in whole
    assert whole.endswith(b"\r\n\r\n3\r\none\r\n3\r\ntwo\r\n0\r\n\r\n")
    assert len(transport.calls) == 3  # head with the first chunk, the second chunk, the end


def test_a_pickled_hop_is_one_chunk_and_unpickles_to_the_same_arrays():
    """Regression: BentoML sent each numpy array of a pickled call as a chunk of its own (2N+1 socket writes and
    ASGI messages for N users' candidates); joined, the other side still splits them by their lengths."""
    hops.apply()
    rng = np.random.default_rng(0)
    batch = [{"items": rng.integers(0, 3000, 200), "features": rng.random((200, 6), dtype=np.float32), "user_id": u}
             for u in range(20)]
    payload = PickleSerde().serialize_value(batch)
    assert len(payload.data) == 1
    back = PickleSerde().deserialize_value(Payload(payload.data, payload.metadata))
    assert [b["user_id"] for b in back] == list(range(20))
    for sent, got in zip(batch, back, strict=True):
        assert np.array_equal(sent["items"], got["items"]) and np.array_equal(sent["features"], got["features"])


def test_a_batch_between_the_services_is_pickled_as_it_is_not_a_pydantic_copy():
    """Regression: BentoML dumped each batch (``list[dict[str, Any]]``, each service's input and answer) through
    pydantic twice per hop on each side, copying every dict, before pickling it. The batch now goes as it is: the
    same content pickled; a model of any other shape, or a dump with options, is dumped as BentoML does."""
    hops.apply()

    @bentoml.service(name="stage")
    class Stage:
        @bentoml.api(batchable=True)
        def answer(self, queries: list[dict[str, Any]]) -> list[dict[str, Any]]:  # as the model services declare
            return queries

        @bentoml.api
        def other(self, user_id: int, scores: list[float]) -> dict[str, float]:
            return {"user_id": user_id}

    rng = np.random.default_rng(0)
    batch = [{"items": rng.integers(0, 3000, 200), "user_id": u, "user_features": {"age": "a"}} for u in range(5)]
    api = Stage.apis["answer"]
    request, answer = api.input_spec.from_inputs(batch), api.output_spec(batch)
    for ours, field, theirs in ((request.model_dump()["queries"], request.queries, BaseModel.model_dump(request)["queries"]),
                                (answer.model_dump(), answer.root, BaseModel.model_dump(answer)["root"])):
        assert ours is field  # no copy
        back = PickleSerde().deserialize_value(PickleSerde().serialize_value(ours))
        assert len(back) == len(theirs) == 5
        for got, want in zip(back, theirs, strict=True):
            assert got.keys() == want.keys() and np.array_equal(got["items"], want["items"])
            assert (got["user_id"], got["user_features"]) == (want["user_id"], want["user_features"])
    plain = api.output_spec([{"user_id": 1}])
    assert plain.model_dump(mode="json") == [{"user_id": 1}] and plain.model_dump(exclude_none=True) == [{"user_id": 1}]
    other = Stage.apis["other"].input_spec(user_id=3, scores=[0.5])
    assert other.model_dump() == BaseModel.model_dump(other) == {"user_id": 3, "scores": [0.5]}


# The ASGI middlewares `bentoml serve` puts in front of each service's routes, outermost first (its configuration
# injected as the server does), in a process of its own: importing the service applies process-wide patches.
STACKS = """
import json
from _bentoml_impl.server.app import ServiceAppFactory
import service
stacks = {}
for svc in (service.Recommender, service.Ranker, service.Candidates):
    svc.inject_config()
    stacks[svc.name] = [m.cls.__name__ for m in ServiceAppFactory(svc).middlewares]
print(json.dumps(stacks))
"""


def test_the_entry_runs_one_asgi_layer_of_its_own_and_no_redundant_timer(tmp_path):
    """Regression: the entry ran nine middlewares per request: BentoML's metrics, request id and request timer,
    then six of the project's (safe headers, error log, traffic, clean errors, timer gauge, public spec), each a
    call and most a wrapper around every message sent. Its own concerns are now one layer, and BentoML's request
    timer, which could never fire before the traffic layer's own 504, is not installed in front of it. The model
    services keep theirs (their only deadline)."""
    out = subprocess.run([str(BIN / "python"), "-c", STACKS], env=project_env(tmp_path), cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    stacks = json.loads(out.stdout.splitlines()[-1])
    assert stacks["recommender"] == ["BoundRequestMetrics", "RequestIdMiddleware", "EntryEdge", "ContextMiddleware"]
    for model_service in ("ranker", "candidates"):
        assert "CancellingTimeoutMiddleware" in stacks[model_service], stacks


def test_the_services_metrics_use_prometheus_client_without_bentomls_deprecated_wrapper(tmp_path):
    """Regression: `bentoml.metrics` warned at every import of the service (deprecated in BentoML 1.4.40: it only
    forwards to prometheus_client, which the services now use directly)."""
    out = subprocess.run([str(BIN / "python"), "-W", "error:bentoml.metrics module is deprecated", "-c", "import service"],
                         env=project_env(tmp_path), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]


# What BentoML's batch endpoint checks to decide between awaiting an API method on the event loop and running it in
# a worker thread (`ServiceAppFactory.batch_infer`), for each model service's batch method.
ON_THE_LOOP = """
import json
from bentoml._internal.utils import is_async_callable
import service
print(json.dumps({f"{svc.name}.{name}": is_async_callable(svc.apis[name].func)
                  for svc, name in ((service.Candidates, "generate"), (service.Ranker, "rank"))}))
"""


def test_the_model_services_compute_each_batch_on_their_event_loop_without_a_thread_hand_off(tmp_path):
    """Regression: both batch methods were sync, so BentoML ran every batch in a worker thread: two thread
    hand-offs per call, each a wake-up waiting for a core on a busy machine, on every request's critical path."""
    out = subprocess.run([str(BIN / "python"), "-c", ON_THE_LOOP], env=project_env(tmp_path), cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.splitlines()[-1]) == {"candidates.generate": True, "ranker.rank": True}
