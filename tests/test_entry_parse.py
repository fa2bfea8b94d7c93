"""The entry parses a valid request body once (recsys/serving/parse_once.py, admission.py) and BentoML's request
metrics look their labelled series up once per route and status (recsys/serving/request_metrics.py). A service
built as `bentoml serve` builds its HTTP app, with the entry's edge layer in front, is driven in process; what is
counted is parses, look-ups and calls, not time."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import bentoml
import prometheus_client.metrics
import pytest
from bentoml._internal.context import server_context
from starlette.responses import Response

from recsys.serving import admission, parse_once, request_metrics
from recsys.serving.admission import Admission
from recsys.serving.edge import EntryEdge
from recsys.serving.schemas import BatchRequest, RecommendRequest, UserFeatures
from recsys.settings import get_settings

CALLS: list[dict[str, Any]] = []


@pytest.fixture(scope="module")
def echo() -> Iterator[tuple[Any, Any]]:
    """A service with the entry's two public routes (their real input models) behind the entry's edge layer; each
    method records the arguments it got."""
    parse_once.apply()
    request_metrics.apply()

    @bentoml.service(name="echo")
    class Echo:
        @bentoml.api(route="/recommend", input_spec=RecommendRequest)
        async def recommend(self, user_id: int, top_k: int = 10, exclude_seen: bool = True,
                            user_features: UserFeatures | None = None) -> dict[str, Any]:
            CALLS.append({"user_id": user_id, "top_k": top_k, "exclude_seen": exclude_seen,
                          "user_features": user_features})
            return Response(json.dumps({"user_id": user_id}), media_type="application/json")  # type: ignore[return-value]

        @bentoml.api(route="/recommend/batch", input_spec=BatchRequest)
        async def recommend_batch(self, requests: list[RecommendRequest]) -> dict[str, Any]:
            CALLS.append({"requests": requests})
            return {"users": [r.user_id for r in requests]}  # through BentoML's output spec

    Echo.add_asgi_middleware(EntryEdge, limits=get_settings().serving,
                             inputs={api.route: api.input_spec for api in Echo.apis.values()}, info={},
                             labels=dict, log_errors=False)
    Echo.inject_config()
    with pytest.MonkeyPatch.context() as patch:  # what `bentoml serve` sets in a worker, for this module only
        for name, value in (("service_name", "echo"), ("bento_name", "echo"),
                            ("service_routes", [api.route for api in Echo.apis.values()])):
            patch.setattr(server_context, name, value)
        yield Echo, Echo.to_asgi(is_main=True)  # built once: its metrics are registered once per process


async def _post(app: Any, path: str, body: bytes) -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
             "headers": [(b"host", b"t"), (b"content-type", b"application/json")], "client": ("127.0.0.1", 5),
             "server": ("127.0.0.1", 3000), "state": {}}
    await app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def _serve(app: Any, requests: list[tuple[str, bytes]], between: Any = None) -> list[tuple[int, bytes]]:
    """Each request's status and body from the service's app (its lifespan run around them); ``between`` is
    called after the first request."""
    async def run() -> list[tuple[int, bytes]]:
        async with app.router.lifespan_context(app):
            answers = [await _post(app, *requests[0])]
            if between is not None:
                between()
            return answers + [await _post(app, *request) for request in requests[1:]]

    return asyncio.run(run())


def test_a_valid_body_is_parsed_once_on_its_way_to_the_api_method(echo, monkeypatch):
    """Regression: a valid /recommend body was parsed four times in the entry: validated by the edge, parsed again
    by it to look for repeated keys, then read, parsed and validated again by BentoML's endpoint."""
    service, app = echo
    spec = service.apis["recommend"].input_spec
    parses, key_scans = [], []
    validate = spec.model_validate_json
    monkeypatch.setattr(spec, "model_validate_json", lambda *a, **k: parses.append(1) or validate(*a, **k))
    repeated_key = admission._repeated_key
    monkeypatch.setattr(admission, "_repeated_key", lambda body: key_scans.append(1) or repeated_key(body))
    CALLS.clear()
    bodies = [b'{"user_id": 7}', b'{"user_id": 8, "top_k": 3, "exclude_seen": false, "user_features": {"age": "a:b"}}']
    answers = _serve(app, [("/recommend", body) for body in bodies])
    assert [status for status, _ in answers] == [200, 200]
    assert (len(parses), len(key_scans)) == (2, 0)  # one parse per body; before: 4
    assert CALLS == [{"user_id": 7, "top_k": 10, "exclude_seen": True, "user_features": None},
                     {"user_id": 8, "top_k": 3, "exclude_seen": False, "user_features": UserFeatures(age="a:b")}]


def test_a_method_that_takes_more_than_its_fields_is_answered_by_bentomls_endpoint_as_before(echo):
    """The batch route's method gets the validated requests, and its answer goes through BentoML's output spec."""
    CALLS.clear()
    [(status, body)] = _serve(echo[1], [("/recommend/batch", b'{"requests": [{"user_id": 1}, {"user_id": 2, "top_k": 4}]}')])
    assert status == 200 and json.loads(body) == {"users": [1, 2]}
    assert [r.top_k for r in CALLS[0]["requests"]] == [10, 4]


@pytest.mark.parametrize(("body", "key"), [
    (b'{"user_id": 1, "user_id": 2}', "user_id"),
    (b'{"user_id": 1, "user_features": {"age": "a", "age": "b"}}', "age"),
    (b'{"user_id": 1, "user\\u005fid": 2}', "user_id"),  # the same key, escaped
    (b'{"user_id": 1, "top_k": 2, "top_k": 2}', "top_k"),  # repeated with the same value
])
def test_a_repeated_key_is_still_refused_without_a_second_parse_of_a_valid_body(body, key):
    refusal = Admission.of(RecommendRequest).admit(body)
    assert isinstance(refusal, str) and f"key '{key}' appears more than once" in refusal


def test_colons_and_quotes_inside_strings_are_not_taken_for_keys():
    body = b'{"user_id": 1, "user_features": {"age": "a:\\"b\\":c", "sex": "{\\"x\\": 1}"}}'
    admitted = Admission.of(RecommendRequest).admit(body)
    assert isinstance(admitted, RecommendRequest) and admitted.user_features.age == 'a:"b":c'
    batch = Admission.of(BatchRequest).admit(b'{"requests": [{"user_id": 1}, {"user_id": 1, "user_id": 2}]}')
    assert isinstance(batch, str) and "key 'user_id' appears more than once" in batch


def test_request_metrics_look_their_series_up_once_per_route_and_status(echo, monkeypatch):
    """Regression: BentoML's metrics middleware called ``labels(...)`` four times per request. The series written
    are BentoML's own: its request count and duration for the route and status grow by one per request."""
    lookups = []
    labels = prometheus_client.metrics.MetricWrapperBase.labels

    def count_lookups() -> None:
        monkeypatch.setattr(prometheus_client.metrics.MetricWrapperBase, "labels",
                            lambda *a, **k: lookups.append(1) or labels(*a, **k))

    def series() -> tuple[float, float]:
        middleware = echo[1].middleware_stack
        while not isinstance(middleware, request_metrics.BoundRequestMetrics):
            middleware = middleware.app
        labels = {"endpoint": "/recommend", "service_name": "echo", "service_version": server_context.bento_version,
                  "http_response_code": 200, "runner_name": "echo"}
        return (middleware.metrics_request_total.labels(**labels)._value.get(),
                middleware.metrics_request_duration.labels(**labels)._sum.get())

    counted: list[tuple[float, float]] = []
    answers = _serve(echo[1], [("/recommend", b'{"user_id": 1}')] * 7,
                     between=lambda: counted.append(series()) or count_lookups())
    assert [status for status, _ in answers] == [200] * 7
    assert lookups == []  # before: 4 per request
    monkeypatch.undo()
    total, duration = series()
    assert total - counted[0][0] == 6 and duration > counted[0][1]
