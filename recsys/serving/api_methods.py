"""A service's API methods bound once per instance, and their answers' media type worked out once per type.

BentoML 1.4.40 repeats two pieces of set-up work on every call of an API method, whose results only depend on the
service instance or the method's output type:

- ``APIMethod.__get__`` builds a new wrapper every time an API method is read from a service instance
  (``inspect.signature`` of the function, ``functools.wraps`` and a closure), and its HTTP endpoint reads the
  method that way for every request (``getattr(instance, name).local``): ~24 us per request on the loaded 2-core
  machine, ~5% of the entry's samples in a py-spy profile of `/recommend`, and the model services pay it per call.
  The first wrapper is kept in the instance's ``__dict__``, where Python finds it before the (non-data)
  descriptor from then on.
- ``IOMixin.mime_type`` of a root output (the model services' ``list[dict[str, Any]]``) builds a pydantic
  ``TypeAdapter`` and a JSON schema to tell JSON from text or file answers, for every answer: ~4% of the ranker's
  samples, and reference cycles (the schema generator and its bound methods, ~2,500 objects a second) left to the
  garbage collector. It is kept per output type.
- ``ServiceAppFactory._add_response_headers`` (the ``Server`` and ``X-BentoML-Request-ID`` headers of every answer)
  gets BentoML's logging format through its dependency injector (simple_di's ``@inject``: an
  ``inspect.Signature.bind_partial`` and a configuration look-up per call): 28 us of its 35 us per answer on a
  loaded machine, in the entry per request and in the model services per call. BentoML's own function (the one
  ``@inject`` wraps) then read its ``http.response.trace_id`` setting through the same container, a chain of
  provider look-ups (~7 us), and set the ``Server`` header through ``MutableHeaders.update`` (~4 us). Both settings
  are read once per process (:func:`header_settings`) and the same headers set one by one.

:func:`apply` patches all three, pinned to the BentoML version it was written against, like
recsys/serving/request_timer.py.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from _bentoml_impl.server.app import ServiceAppFactory
from _bentoml_sdk.io_models import IOMixin  # type: ignore[import-untyped]  # BentoML ships this part untyped
from _bentoml_sdk.method import APIMethod  # type: ignore[import-untyped]
from bentoml._internal.configuration.containers import BentoMLContainer
from bentoml._internal.context import trace_context
from starlette.responses import Response

from recsys.serving.pins import written_for

WRITTEN_FOR = {"bentoml": "1.4.40"}


def apply() -> None:
    """Install both in this process (once), if BentoML is the version this was written for."""
    if not written_for(__name__, WRITTEN_FOR, lost="API methods are bound, their media types worked out and their "
                       "answers' logging format injected anew on every request",
                       check="APIMethod.__get__, IOMixin.mime_type and ServiceAppFactory._add_response_headers"):
        return
    bind = APIMethod.__get__
    if getattr(bind, "once", False):
        return
    media_type = IOMixin.mime_type.__func__
    media_types: dict[type, str] = {}

    def bind_once(self: Any, instance: Any, owner: type) -> Any:
        bound = bind(self, instance, owner)
        if instance is not None:
            instance.__dict__[self.name] = bound
        return bound

    def media_type_once(cls: type) -> str:
        if (known := media_types.get(cls)) is None:
            known = media_types[cls] = media_type(cls)
        return known

    bind_once.once = True  # type: ignore[attr-defined]  # applied once per process
    APIMethod.__get__ = bind_once  # the patch itself
    IOMixin.mime_type = classmethod(media_type_once)
    ServiceAppFactory._add_response_headers = headers_without_injection(ServiceAppFactory._add_response_headers)


def headers_without_injection(add_headers: Any) -> Any:
    """BentoML's ``_add_response_headers`` (1.4.40) with the settings it reads per answer read once per process:
    the same ``Server``, ``X-BentoML-Request-ID`` and (if configured) ``X-BentoML-Trace-ID`` headers."""
    unwrapped = add_headers.__wrapped__

    def add_response_headers(self: ServiceAppFactory, resp: Response) -> None:
        logging_format, with_trace_id = header_settings()
        headers = resp.headers
        headers["Server"] = f"BentoML Service/{self.service.name}"
        if (request_id := trace_context.request_id) is not None:
            headers["X-BentoML-Request-ID"] = format(request_id, logging_format["span_id"])
        if with_trace_id and (trace_id := trace_context.trace_id) is not None:
            headers["X-BentoML-Trace-ID"] = format(trace_id, logging_format["trace_id"])

    add_response_headers.__wrapped__ = unwrapped  # type: ignore[attr-defined]
    return add_response_headers


@cache
def header_settings() -> tuple[dict[str, str], bool]:
    """BentoML's ``logging.formatting`` setting (what ``@inject`` gave ``_add_response_headers`` on every call) and
    its ``http.response.trace_id`` one (whether answers carry the trace id); read at the first answer, once
    BentoML has loaded its configuration."""
    return BentoMLContainer.logging_formatting.get(), bool(BentoMLContainer.http.response.trace_id.get())
