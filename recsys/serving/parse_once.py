"""A request body the entry has validated is not parsed again: BentoML's endpoint takes the validated request.

The entry's edge layer validates every body of its public POST routes before BentoML sees it, with the route's
own input model (``@bentoml.api``'s ``input_spec``; recsys/serving/admission.py), to answer a bad one in the
service's error body. BentoML's endpoint (``ServiceAppFactory.api_endpoint``, 1.4.40) then read the body again,
built a serde and parsed and validated it into the same model, and per request imported seven names, looked up
the method's original function and read ``model_fields`` on the instance, which pydantic answers with a
deprecation warning each time. The edge now hands the request it validated over in the ASGI scope's ``state``
(:func:`hand_over`), and for an API method BentoML would simply await with that model's fields (a coroutine,
neither batchable nor taking a context, not a root input) the endpoint calls it with them. Its answer is BentoML's:
a ``Response`` as it is, anything else through the method's output spec as JSON; the endpoint's wrapper (errors,
headers, background tasks) is untouched. Without a handed-over request (the model services, a route the edge does
not validate) or for any other method, BentoML's endpoint runs as before.

:func:`apply` patches the endpoint, pinned to the BentoML version it was written against like
recsys/serving/request_timer.py.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from _bentoml_impl.serde import JSONSerde
from _bentoml_impl.server.app import ServiceAppFactory
from _bentoml_sdk.io_models import ARGS, KWARGS  # type: ignore[import-untyped]  # BentoML ships this part untyped
from _bentoml_sdk.method import APIMethod  # type: ignore[import-untyped]
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from recsys.serving.pins import written_for

WRITTEN_FOR = {"bentoml": "1.4.40"}
STATE_KEY = "recsys.validated_request"


def hand_over(scope: Scope, request: BaseModel) -> None:
    """Keep the request the edge validated from this body for the API method (Starlette's per-request state)."""
    scope.setdefault("state", {})[STATE_KEY] = request


def takes_fields(method: APIMethod) -> bool:
    """Whether BentoML's endpoint would simply await ``method`` with its input model's fields as keywords."""
    fields = method.input_spec.model_fields
    return (not method.batchable and method.ctx_param is None and ARGS not in fields and KWARGS not in fields
            and not getattr(method.input_spec, "__root_input__", False)
            and inspect.iscoroutinefunction(method.func))


def apply() -> None:
    """Install the endpoint in this process (once), if BentoML is the version this was written for."""
    if not written_for(__name__, WRITTEN_FOR, lost="every request body the entry validated is parsed and "
                       "validated again by BentoML's endpoint", check="ServiceAppFactory.api_endpoint"):
        return
    endpoint = ServiceAppFactory.api_endpoint
    if getattr(endpoint, "parse_once", False):
        return
    ServiceAppFactory.api_endpoint = taking_validated(endpoint)  # the patch itself


def taking_validated(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """BentoML's ``api_endpoint`` that calls the method with a handed-over request's fields when it can."""
    direct: dict[Callable[..., Any], bool] = {}  # per API function: takes_fields, worked out once
    serde = JSONSerde()  # stateless; BentoML builds one per request

    async def api_endpoint(self: ServiceAppFactory, name: str, request: Request) -> Response:
        validated = request.scope.get("state", {}).pop(STATE_KEY, None)
        method = self.service.apis[name]
        if validated is None or type(validated) is not method.input_spec:
            return await endpoint(self, name, request)
        if (simple := direct.get(method.func)) is None:
            simple = direct[method.func] = takes_fields(method)
        if not simple:
            return await endpoint(self, name, request)
        func = getattr(self._service_instance, name).local
        output = await func(**{field: getattr(validated, field) for field in method.input_spec.model_fields})
        return output if isinstance(output, Response) else await method.output_spec.to_http_response(output, serde)

    api_endpoint.parse_once = True  # type: ignore[attr-defined]  # applied once per process
    return api_endpoint
