"""A service's API methods bound once per instance, not once per request.

BentoML 1.4.40's ``APIMethod.__get__`` builds a new wrapper every time an API method is read from a service
instance: ``inspect.signature`` of the function, ``functools.wraps`` and a closure. Its HTTP endpoint reads the
method that way for every request (``getattr(instance, name).local``), which cost ~5% of the entry's CPU per
`/recommend` in a py-spy profile, and the model services pay it per call. The wrapper depends only on the
instance and the method, so :func:`apply` keeps the first one in the instance's ``__dict__``, where Python finds it
before the (non-data) descriptor from then on. Pinned to the BentoML version it was written against, like
recsys/serving/request_timer.py.
"""

from __future__ import annotations

import logging
from typing import Any

import bentoml
from _bentoml_sdk.method import APIMethod  # type: ignore[import-untyped]  # BentoML ships this part untyped

WRITTEN_FOR = "1.4.40"
log = logging.getLogger("recsys")


def apply() -> None:
    """Bind API methods once per instance in this process, if BentoML is the version this was written for."""
    if bentoml.__version__ != WRITTEN_FOR:
        log.warning("recsys: BentoML %s is not %s, the version recsys/serving/api_methods.py was written for: API "
                    "methods are bound anew on every request. Check APIMethod.__get__, then update "
                    "serving/api_methods.py.", bentoml.__version__, WRITTEN_FOR)
        return
    bind = APIMethod.__get__
    if getattr(bind, "binds_once", False):
        return

    def bind_once(self: APIMethod[Any, Any], instance: Any, owner: type) -> Any:
        bound = bind(self, instance, owner)
        if instance is not None:
            instance.__dict__[self.name] = bound
        return bound

    bind_once.binds_once = True  # type: ignore[attr-defined]  # applied once per process
    APIMethod.__get__ = bind_once  # the patch itself
