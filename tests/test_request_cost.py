"""BentoML's per-request work that serves nothing here is not done: no OpenTelemetry spans unless tracing is
configured (recsys/serving/tracing.py; the request id BentoML derived from them is still there), API methods
bound once per service instance, their answers' media type worked out once and their headers set without
BentoML's dependency injector (recsys/serving/api_methods.py).
Cheaper work must not change an answer: CatBoost scores categories given as codes exactly as it scores their
strings."""

from __future__ import annotations

import inspect
import json
import subprocess
import urllib.request
from types import SimpleNamespace
from typing import Any

import bentoml
import numpy as np
import simple_di
from _bentoml_impl.server.app import ServiceAppFactory
from bentoml._internal.configuration.containers import BentoMLContainer
from bentoml._internal.context import trace_context
from starlette.responses import Response

from recsys.core.candidates import Mix
from recsys.core.reranker import FRAME_FROM_ROWS
from recsys.serving import api_methods
from recsys.settings import get_settings
from tests.helpers import BIN, ROOT, warm_user

# A BentoML service built as `bentoml serve` builds one (its configuration injected), with the patch applied: the
# middleware stack its HTTP app gets. In a process of its own, since both change process-wide state.
STACK = """
import json, sys
import bentoml
from _bentoml_impl.server.app import ServiceAppFactory
from recsys.serving import tracing

@bentoml.service(name="tiny", **json.loads(sys.argv[1]))
class Tiny:
    @bentoml.api
    def echo(self, text: str) -> str:
        return text

Tiny.inject_config()
tracing.apply()
print(json.dumps([m.cls.__name__ for m in ServiceAppFactory(Tiny).middlewares]))
"""


def _stack(config: dict) -> list[str]:
    out = subprocess.run([str(BIN / "python"), "-c", STACK, json.dumps(config)], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.splitlines()[-1])


def test_without_tracing_no_span_middleware_runs_and_the_request_id_is_still_set():
    stack = _stack({})
    assert "OpenTelemetryMiddleware" not in stack
    # in its place: before the access log, whose lines carry the request id
    assert stack.index("RequestIdMiddleware") < stack.index("AccessLogMiddleware")


def test_with_tracing_configured_the_spans_stay():
    stack = _stack({"tracing": {"exporter_type": "in_memory"}})  # BentoML's exporter for tests
    assert "OpenTelemetryMiddleware" in stack and "RequestIdMiddleware" not in stack


def test_each_answer_carries_its_own_request_id(server, models):
    ids = set()
    for i in range(5):
        request = urllib.request.Request(f"{server.url}/recommend", method="POST",
                                         data=json.dumps({"user_id": warm_user(models, i)}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            ids.add(response.headers["X-BentoML-Request-ID"])
    assert None not in ids and len(ids) == 5


def test_an_api_method_is_bound_once_per_instance_and_still_calls_its_function():
    @bentoml.service(name="twice")
    class Twice:
        @bentoml.api
        def double(self, text: str) -> str:
            return text * 2

    api_methods.apply()
    api_methods.apply()  # idempotent: service.py applies it in every process that imports it
    instance = Twice.inner()
    first, second = instance.double, instance.double
    assert first is second and first.local is second.local  # BentoML builds a new wrapper on every read
    assert first("ab") == first.local("ab") == "abab"
    assert Twice.inner().double is not first  # per instance


def test_the_media_type_of_an_answer_is_worked_out_once_per_type(monkeypatch):
    @bentoml.service(name="stage")
    class Stage:
        @bentoml.api
        def answer(self, queries: list[dict[str, Any]]) -> list[dict[str, Any]]:  # as the model services declare
            return queries

    api_methods.apply()
    output = Stage.apis["answer"].output_spec
    schemas = []
    schema = output.model_json_schema
    monkeypatch.setattr(output, "model_json_schema", lambda *a, **k: schemas.append(1) or schema(*a, **k))
    assert [output.mime_type() for _ in range(3)] == ["application/json"] * 3
    assert len(schemas) == 1  # BentoML builds a TypeAdapter and a JSON schema for every answer


def test_an_answers_headers_are_bentomls_without_its_dependency_injector(monkeypatch):
    """Regression: BentoML's ``@inject`` bound the arguments of ``_add_response_headers`` with
    ``inspect.Signature.bind_partial`` on every answer, to pass it the same logging format each time, and the
    function read its trace id setting through the configuration container each time. The headers are what
    BentoML's own injected function sets."""
    api_methods.apply()
    factory = SimpleNamespace(service=SimpleNamespace(name="stage"))
    bentomls = simple_di.inject(ServiceAppFactory._add_response_headers.__wrapped__)
    ServiceAppFactory._add_response_headers(factory, Response(b"{}"))  # the first answer reads the configuration
    binds, settings_read = [], []
    bind_partial = inspect.Signature.bind_partial
    monkeypatch.setattr(inspect.Signature, "bind_partial", lambda *a, **k: binds.append(1) or bind_partial(*a, **k))
    setting = type(BentoMLContainer.http.response.trace_id)
    read_setting = setting.get
    monkeypatch.setattr(setting, "get", lambda *a, **k: settings_read.append(1) or read_setting(*a, **k))
    token = trace_context._request_id_var.set(0xABCDEF)
    try:
        ours, theirs = Response(b"{}"), Response(b"{}")
        ServiceAppFactory._add_response_headers(factory, ours)
        assert binds == [] and settings_read == []  # before: its trace id setting was read on every answer
        bentomls(factory, theirs)
        assert binds  # BentoML's injection runs once per answer
    finally:
        trace_context._request_id_var.reset(token)
    assert ours.headers.items() == theirs.headers.items()
    assert ours.headers["server"] == "BentoML Service/stage" and ours.headers["x-bentoml-request-id"] == "0000000000abcdef"


def test_the_reranker_scores_category_codes_exactly_as_catboost_scores_their_strings(models):
    """A large batch is scored from pandas categoricals (each label hashed once per call), a small one from
    strings; both give the scores of the strings training fitted on, bit for bit, for known users and for one the
    feature store has never seen (its defaults row: 'unknown' categories)."""
    candidates, reranker = models
    mix = candidates.served_mix(Mix(*get_settings().candidates.mix))
    for rows in (np.arange(40), np.arange(2)):
        batch = candidates.generate(rows, mix)
        users = candidates.user_ids[rows].copy()
        users[-1] = candidates.user_ids.max() + 1  # not in the feature store
        strings = reranker.model.predict(reranker.assembler.assemble(users, batch), prediction_type="RawFormulaVal",
                                         thread_count=1)
        frame = reranker.assembler.frame(users, batch)
        assert list(frame.columns) == reranker.assembler.feature_names
        assert np.array_equal(reranker.model.predict(frame, prediction_type="RawFormulaVal", thread_count=1), strings)
        assert np.array_equal(reranker.score(users, batch), strings.astype(np.float32))
    assert len(candidates.generate(np.arange(40), mix)) >= FRAME_FROM_ROWS > len(batch)  # both ways were taken
