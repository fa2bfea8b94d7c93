"""The ASGI app behind /ui: the page, and the read-only JSON it needs besides the public API.

The page (``static/``) is plain HTML and JavaScript; it asks ``POST /recommend`` for recommendations and
``/metrics`` for live traffic like any client, and these endpoints for what the API does not say: titles,
genres and years, a user's recent history, and the served models with their offline report. The answers come
from the showcase packed with the served model pair, loaded once when the service starts (the app's lifespan,
which BentoML runs in the service's worker). Bad ids are a 400 and unknown ones a 404, both as
``{"status": "error", "msg": ...}``. Ids travel in the query string, not the path: BentoML labels its
Prometheus series with the raw request path, so a path per user would grow one series per user.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bentoml
import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from recsys.core import model_store
from recsys.core.showcase import Showcase, ShowcaseError, load_showcase
from recsys.serving.schemas import MAX_ID, MAX_TOP_K

STATIC = Path(__file__).parent / "static"
INFO_KEYS = ("dataset", "dataset_fingerprint", "dataset_summary", "feature_store_version", "features_as_of",
             "trained_at", "training_seconds", "params", "libraries")
log = logging.getLogger("recsys")


@dataclass
class PageData:
    """Everything the endpoints answer from, built once at start-up."""

    model: dict[str, Any]
    showcase: Showcase | None
    missing: str  # why there is no showcase ("" when there is one)

    @classmethod
    def load(cls, version: str) -> PageData:
        pair = [model_store.get_model(name, version) for name in (model_store.CANDIDATES, model_store.RANKER)]
        try:
            showcase, missing = load_showcase(Path(pair[1].path_of(model_store.SHOWCASE_DIR))), ""
        except ShowcaseError as exc:  # an older pair still serves; the page says what it cannot show
            log.warning("web page: %s", exc)
            showcase, missing = None, str(exc)
        return cls(_model_info(version, pair, showcase, missing), showcase, missing)


def _model_info(version: str, pair: list[bentoml.Model], showcase: Showcase | None, missing: str) -> dict[str, Any]:
    meta = pair[1].info.metadata
    info = {"version": version, "models": [{"tag": str(m.tag), "created": m.info.creation_time.isoformat(
        timespec="seconds")} for m in pair], **{k: meta.get(k) for k in INFO_KEYS}, "showcase_missing": missing}
    if showcase is None:
        return info
    return {**info, "report": showcase.summary, "plots": list(showcase.plots),
            "sample_users": showcase.sample_users(), "new_user_id": showcase.new_user_id()}


def _error(status: int, msg: str) -> JSONResponse:
    return JSONResponse({"status": "error", "msg": msg}, status_code=status)


def _parse_id(raw: str, name: str) -> int:
    """A non-negative integer id as the API accepts it, or a 400 that says what was wrong."""
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 19 and int(raw) <= MAX_ID):
        raise HTTPException(400, f"{name} must be an integer from 0 to {MAX_ID}, got {raw[:40]!r}")
    return int(raw)


def _showcase(request: Request) -> Showcase:
    page: PageData = request.app.state.page
    if page.showcase is None:
        raise HTTPException(404, page.missing)
    return page.showcase


async def index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html")


async def model(request: Request) -> Response:
    return JSONResponse(request.app.state.page.model)


async def history(request: Request) -> Response:
    user_id = _parse_id(request.query_params.get("user_id", ""), "user_id")
    answer = _showcase(request).user(user_id)
    if answer is None:
        raise HTTPException(404, f"User {user_id} has no history: the models do not know them, so POST /recommend "
                                 "treats them as a new user (cold start).")
    return JSONResponse(answer)


async def items(request: Request) -> Response:
    raw = [part.strip() for part in request.query_params.get("ids", "").split(",") if part.strip()]
    if not 1 <= len(raw) <= MAX_TOP_K:
        raise HTTPException(400, f"ids: give 1 to {MAX_TOP_K} comma-separated item ids, e.g. ?ids=10,42")
    found, unknown = _showcase(request).item_details(np.array([_parse_id(part, "item id") for part in raw], dtype=np.int64))
    return JSONResponse({"items": found, "unknown": unknown})


async def plot(request: Request) -> Response:
    name = request.query_params.get("name", "")
    png = _showcase(request).plots.get(name)
    if png is None:
        raise HTTPException(404, f"no plot named {name[:40]!r}")
    return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})


async def not_found(request: Request) -> Response:
    return _error(404, f"no such endpoint: {request.url.path}")


async def http_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, HTTPException):  # registered for HTTPException only
        raise exc
    return _error(exc.status_code, exc.detail)


def create_app(version: str) -> Starlette:
    """The app for model pair ``version``; its data loads when the server starts, not at import."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.page = PageData.load(version)
        yield

    routes = [
        Route("/", index),
        Route("/api/model", model),
        Route("/api/history", history),
        Route("/api/items", items),
        Route("/api/plot", plot),
        Route("/api/{path:path}", not_found, methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error})
