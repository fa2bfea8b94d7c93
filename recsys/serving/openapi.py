"""/docs.json as the public routes really answer, not as BentoML's generic template describes them.

BentoML documents every API's errors as ``{"error": ..., "detail": ...}`` with 400, 404 and 500. Behind
:class:`recsys.serving.errors.CleanErrors` and :mod:`recsys.serving.traffic` the public routes answer ``{"status":
"error", "msg": ..., "recommendations": []}`` instead, and also 408 (body too slow), 413 (body too large), 415 (not
JSON), 429 (over capacity), 503 (a model service down) and 504 (answer too slow); 429 and 503 with Retry-After.
BentoML also leaves out GET /get_recommendation (a mounted Starlette route) and titles the document with the
service's name and version ``None``. :class:`PublicSpec` rewrites the document so clients, Swagger UI and schema-based
tests (schemathesis) see the real contract.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from typing import Any

from starlette.types import Receive, Scope, Send

from recsys.serving import flask_compat
from recsys.serving.asgi import rewrite_responses
from recsys.serving.errors import PUBLIC_PATHS, RETRY_AFTER
from recsys.serving.traffic import MAX_BODY_BYTES
from recsys.settings import PROJECT_ROOT

SPEC_PATH = "/docs.json"
ERROR_SCHEMA_NAME = "ErrorResponse"
ERROR_SCHEMA = {
    "type": "object",
    "title": ERROR_SCHEMA_NAME,
    "required": ["status", "msg", "recommendations"],
    "properties": {
        "status": {"type": "string", "enum": ["error"]},
        "msg": {"type": "string", "description": "what is wrong and how to fix it"},
        "recommendations": {"type": "array", "maxItems": 0, "items": {}},
    },
    "additionalProperties": False,
}
ERRORS = {
    "400": "Invalid request: wrong type, out of range, unknown field, invalid JSON, too many users",
    "408": "The request body did not arrive in full in time after its headers; the connection is closed",
    "413": f"Request body larger than {MAX_BODY_BYTES} bytes",
    "415": "Content-Type is not application/json",
    "429": "Over capacity (too many requests or uploads in progress); retry after Retry-After seconds",
    "500": "Internal error",
    "503": "A model service is down, restarting or stuck; retry after Retry-After seconds",
    "504": "The answer did not start in time",
}
BODY_ERRORS = {"408", "413", "415"}  # only for routes that take a body
RETRY_HEADER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}


def api_info(model_version: str) -> dict[str, str]:
    """OpenAPI ``info`` from pyproject.toml (packed into the Bento too; the package itself is not installed there)."""
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    return {
        "title": project["name"],
        "version": project["version"],
        "description": (
            f"{project['description']}. `POST /recommend` gives a user's top-k items (LightFM candidates reranked "
            "by CatBoost for users with a history, their demographic segment's or global popularity for the "
            "others), `POST /recommend/batch` many users at once, and `GET /get_recommendation?user_id=N` the same "
            "items in the Flask reference service's shape. Every error answers "
            '`{"status": "error", "msg": ..., "recommendations": []}`.\n\n'
            f"Model pair served: `{model_version}`. Try it on the web page: [/ui/](ui/)."
        ),
    }


def public_spec(spec: dict[str, Any], info: dict[str, str], labels: dict[str, frozenset[str]]) -> dict[str, Any]:
    """The spec with the project's ``info``, the served model's demographic ``labels`` as the ``user_features``
    enums, the GET route, and the public routes' real error responses."""
    spec["info"] = info  # not BentoML's: its name, version None and its team as the contact
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    features = schemas.get("UserFeatures", {}).get("properties", {})
    for field, known in labels.items():
        if field in features:
            features[field].update(enum=sorted(known), examples=sorted(known)[:1])
    schemas.update({ERROR_SCHEMA_NAME: ERROR_SCHEMA, **flask_compat.openapi_schemas()})
    paths = spec.setdefault("paths", {})
    tags = paths.get("/recommend", {}).get("post", {}).get("tags", [])
    paths[flask_compat.ROUTE] = flask_compat.openapi_path(tags)
    ref = {"$ref": f"#/components/schemas/{ERROR_SCHEMA_NAME}"}
    for path, item in paths.items():
        if not path.startswith(PUBLIC_PATHS):
            continue
        for operation in item.values():
            takes_body = "requestBody" in operation
            if takes_body:
                operation["requestBody"]["required"] = True  # no body is a 400 ('user_id: Field required')
            responses = {code: r for code, r in operation.get("responses", {}).items() if str(code).startswith("2")}
            responses.update({code: {"description": text, "content": {"application/json": {"schema": ref}},
                                     **({"headers": RETRY_HEADER} if int(code) in RETRY_AFTER else {})}
                              for code, text in ERRORS.items() if takes_body or code not in BODY_ERRORS})
            operation["responses"] = responses
    return spec


class PublicSpec:
    """/docs.json as :func:`public_spec` rewrites it, served by the entry's edge layer (recsys/serving/edge.py);
    ``labels`` is called when the spec is asked for, so the service module can build the layer before any model
    is read."""

    def __init__(self, info: dict[str, str], labels: Callable[[], dict[str, frozenset[str]]]) -> None:
        self.info = info
        self.labels = labels

    async def __call__(self, app: Any, scope: Scope, receive: Receive, send: Send) -> None:
        await rewrite_responses(app, scope, receive, send, lambda status: status == 200,
                                lambda status, body: json.dumps(public_spec(json.loads(body), self.info, self.labels())).encode())
