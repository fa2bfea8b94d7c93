"""GET /get_recommendation?user_id=N: the route of the Flask reference service, for clients migrating from it.

BentoML 1.4 serves every ``@bentoml.api`` as POST only, so this route is a small Starlette app mounted on the
Recommender (BentoML's PassiveMount hands it only the paths its routes match). The query is checked with the same
pydantic types as the body of POST /recommend and answered by the same call, so it shares the micro-batcher. An
invalid query is a 400 ``{"detail": "<pydantic's errors in one line>"}``, which :class:`serving.errors.CleanErrors`
words like every other error. BentoML documents only mounted FastAPI apps in /docs.json; :mod:`serving.openapi`
adds this route from :func:`openapi_path`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.endpoints import HTTPEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from recsys.serving.admission import ErrorLine, describe
from recsys.serving.answers import Answer
from recsys.serving.schemas import FlaskQuery, FlaskResponse, RecommendRequest

ROUTE = "/get_recommendation"
# Plain decimal only: pydantic's string mode would also read '5.0', ' 5' and '5_0' as 5.
_INTEGER = re.compile(r"-?[0-9]{1,100}")

Recommend = Callable[[RecommendRequest], Awaitable[Answer | Response]]


def _invalid(errors: Sequence[ErrorLine]) -> JSONResponse:
    return JSONResponse({"detail": describe(errors)}, status_code=400)


def create_app(recommend: Recommend) -> Starlette:
    """The route, answering with ``recommend`` (POST /recommend's call: an answer, or a ready 503)."""

    class GetRecommendation(HTTPEndpoint):  # a class, so every method reaches it and gets this 405 and message
        async def get(self, request: Request) -> Response:
            counts = Counter(name for name, _ in request.query_params.multi_items())
            repeated = next((name for name, count in counts.items() if count > 1), None)
            if repeated is not None:  # like a repeated JSON key: which one was meant is a guess
                return _invalid([{"loc": (repeated,), "msg": "appears more than once in the query; send it once"}])
            values = {name: int(v) if _INTEGER.fullmatch(v) else v for name, v in request.query_params.items()}
            try:
                query = FlaskQuery.model_validate(values)
            except ValidationError as exc:
                return _invalid(exc.errors(include_url=False, include_context=False, include_input=False))
            answer = await recommend(RecommendRequest(user_id=query.user_id, top_k=query.top_k))
            if isinstance(answer, Response):
                return answer
            return JSONResponse(FlaskResponse(recommendations=answer.item_ids.tolist()).model_dump())

        async def method_not_allowed(self, request: Request) -> Response:
            return JSONResponse({"detail": f"method {request.method} is not allowed here; use GET"}, status_code=405,
                                headers={"Allow": ", ".join(self._allowed_methods)})

    return Starlette(routes=[Route(ROUTE, GetRecommendation)])


def openapi_path(tags: list[str]) -> dict[str, Any]:
    """The route's OpenAPI 3.0 path item (its error responses are added with the other public routes')."""
    schema = FlaskQuery.model_json_schema()
    parameters = [{"name": name, "in": "query", "required": name in schema.get("required", []),
                   "description": prop.pop("description", ""), "schema": prop}
                  for name, prop in schema["properties"].items()]
    ok = {"$ref": f"#/components/schemas/{FlaskResponse.__name__}"}
    return {"get": {
        "tags": tags,
        "operationId": "recommender__get_recommendation",
        "description": "POST /recommend with the default options, answered in the Flask reference service's shape: "
                       "the same item ids in the same order.",
        "parameters": parameters,
        "responses": {"200": {"description": "Successful Response", "content": {"application/json": {"schema": ok}}}},
    }}


def openapi_schemas() -> dict[str, Any]:
    return {FlaskResponse.__name__: FlaskResponse.model_json_schema()}
