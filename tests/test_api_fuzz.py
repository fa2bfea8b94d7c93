"""Schema fuzzing: schemathesis builds requests from the service's own /docs.json and checks every answer.

Only the public routes (``/recommend``, ``/recommend/batch``, ``/get_recommendation``) are fuzzed. BentoML's infrastructure routes
(/healthz, /livez, /readyz, /metrics) are in the spec too, but they take no input to vary and are BentoML's code
rather than ours; test_service.py::test_operational_endpoints checks that they answer.

Each check runs on every generated case: no 5xx, the status is documented, the body matches the documented
schema (the success schema, or the error body for 4xx), schema-valid requests are accepted and schema-violating
ones refused, undeclared methods get a 405 with ``Allow``. The tests after the fuzzing one keep the cases it
found as explicit regressions.
"""

from __future__ import annotations

import json
import tomllib
import urllib.error
import urllib.request

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from recsys.serving.errors import PUBLIC_PATHS
from recsys.settings import PROJECT_ROOT
from tests.helpers import post

# cases per generation mode, spread over the three routes: about 4 s in all on the 2-core CI machine. The cases are
# derandomized, so CI runs the same ones every time; README's Reliability section shows a wider random sweep.
FUZZ_EXAMPLES = 120


@pytest.fixture(scope="module")
def public_api(server):
    return schemathesis.openapi.from_url(f"{server.url}/docs.json").include(path_regex=f"^({'|'.join(PUBLIC_PATHS)})")


def error_body_is_clear(ctx, response, case) -> None:
    """A 4xx says in words what is wrong: the service's error body with a message a person can act on."""
    if response.status_code < 400:
        return
    body = response.json()
    assert body["status"] == "error" and body["recommendations"] == [], body
    assert isinstance(body["msg"], str) and len(body["msg"]) > 15 and not body["msg"].startswith("HTTP "), body


# schemathesis' own pytest integration (`schemathesis.pytest.from_fixture`) fails under pytest 9 (it sets the
# removed `Item._nodeid`), so the cases are drawn with plain Hypothesis from the schema's strategy instead.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_public_routes_survive_schema_fuzzing(public_api, mode):
    @given(case=public_api.as_strategy(mode))
    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def fuzz(case) -> None:
        case.call_and_validate(additional_checks=[error_body_is_clear])

    fuzz()


def _docs(server) -> dict:
    with urllib.request.urlopen(f"{server.url}/docs.json", timeout=10) as response:
        return json.loads(response.read())


def test_docs_json_describes_nullable_fields_and_required_bodies(server):
    """Found by fuzzing: BentoML dropped the null branch of `X | None` fields, so the spec said `msg` is always a
    string (it is null on success) and `user_features` cannot be null (it can); and an absent body looked valid."""
    paths = _docs(server)["paths"]
    for route in ("/recommend", "/recommend/batch"):
        operation = paths[route]["post"]
        assert operation["requestBody"]["required"] is True
        ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok["properties"]["msg"]["nullable"] is True and ok["properties"]["msg"]["type"] == "string"
    request = paths["/recommend"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert request["properties"]["user_features"]["nullable"] is True
    status, body = post(f"{server.url}/recommend", {"user_id": 1, "user_features": None})
    assert status == 200 and body["msg"] is None


def test_docs_json_describes_the_real_error_body(server):
    """Found by fuzzing: the spec promised BentoML's `{"error": ...}` bodies; the service answers its own. Found by
    the hostile-traffic probe (issue 12): 408, 429 and 504 were missing, and 429 and 503 say when to retry."""
    docs = _docs(server)
    error = docs["components"]["schemas"]["ErrorResponse"]
    assert error["required"] == ["status", "msg", "recommendations"]
    for route in ("/recommend", "/recommend/batch"):
        responses = docs["paths"][route]["post"]["responses"]
        assert {"400", "408", "413", "415", "429", "503", "504"} <= set(responses)
        for code, response in responses.items():
            if not code.startswith("2"):
                assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}
        assert {code for code, r in responses.items() if "Retry-After" in r.get("headers", {})} == {"429", "503"}


@pytest.mark.parametrize("kids_flg", [False, True, 1.0, "1", 2])
def test_kids_flg_is_0_or_1_and_nothing_else(server, kids_flg):
    """Found by fuzzing: `Literal[0, 1]` also took `false` and `true` (False == 0 in Python)."""
    status, error = post(f"{server.url}/recommend", {"user_id": 1, "user_features": {"kids_flg": kids_flg}})
    assert status == 400 and "user_features.kids_flg" in error["msg"]
    assert post(f"{server.url}/recommend", {"user_id": 1, "user_features": {"kids_flg": 1}})[0] == 200


@pytest.mark.parametrize(("path", "allow", "method"), [
    *(("/recommend", "POST", m) for m in ("GET", "PUT", "DELETE", "TRACE")),
    *(("/get_recommendation?user_id=1", "GET, HEAD", m) for m in ("POST", "PUT", "DELETE", "PATCH")),
])
def test_other_methods_get_405_with_allow(server, path, allow, method):
    """Found by fuzzing: rewriting the error body dropped the 405's `Allow` header (RFC 9110 requires it)."""
    request = urllib.request.Request(f"{server.url}{path}", method=method)
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(request, timeout=10)
    assert answer.value.code == 405
    assert answer.value.headers["Allow"] == allow
    assert answer.value.headers["Content-Type"] == "application/json"
    if allow.startswith("GET"):  # the route's own 405 says what to use (BentoML's says "Method Not Allowed")
        assert json.loads(answer.value.read())["msg"] == f"method {method} is not allowed here; use GET"


def test_docs_json_documents_the_get_route_its_query_and_errors(server):
    """BentoML documents only mounted FastAPI apps; the GET route of the Flask reference service is added."""
    docs = _docs(server)
    operation = docs["paths"]["/get_recommendation"]["get"]
    parameters = {p["name"]: p for p in operation["parameters"]}
    assert parameters["user_id"]["in"] == "query" and parameters["user_id"]["required"] is True
    assert parameters["user_id"]["schema"]["type"] == "integer" and parameters["user_id"]["schema"]["minimum"] == 0
    assert parameters["top_k"]["required"] is False and parameters["top_k"]["schema"]["maximum"] == 100
    ok = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert docs["components"]["schemas"][ok]["properties"]["recommendations"]["items"] == {"type": "integer"}
    assert {"400", "429", "503", "504"} <= set(operation["responses"])
    assert not {"408", "413", "415"} & set(operation["responses"])
    assert operation["responses"]["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorResponse"}


def test_docs_json_names_the_project_its_version_and_the_page(server):
    """Swagger UI at / showed BentoML's `recommender:dev` and version `None`."""
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    info = _docs(server)["info"]
    assert info["title"] == project["name"] and info["version"] == project["version"]
    model_version = post(f"{server.url}/recommend", {"user_id": 1})[1]["model_version"]
    assert "(ui/)" in info["description"] and model_version in info["description"]
    assert "contact" not in info


def test_docs_json_lists_the_served_models_demographic_labels(server, models):
    """The labels `user_features` accepts come from the training data: the spec names exactly the served model's."""
    labels = {"age": set(models[0].label_age.tolist()), "sex": set(models[0].label_sex.tolist())}
    features = _docs(server)["components"]["schemas"]["UserFeatures"]["properties"]
    assert {field: features[field]["enum"] for field in labels} == {f: sorted(v) for f, v in labels.items()}
    assert "age_25_34" in labels["age"] and {"F", "M"} <= labels["sex"]
