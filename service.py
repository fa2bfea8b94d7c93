"""BentoML service: Recommender (entry, JSON API) -> Candidates (LightFM, batchable) -> Ranker (CatBoost, batchable).

`bentoml serve service:Recommender` (or `make serve`). Importing this module reads the settings and looks up which
pair to serve: RECSYS_SERVING__MODEL_VERSION, the pair packed into the Bento when served from one, or the newest
ranker in the BentoML store; it neither opens the models nor stops when there is none, so the module can be imported
to test or document it. `bentoml serve` checks that pair once, before any worker starts (BentoML's deployment hook,
:func:`settle_model_pair`), and every worker, restarts included, then loads exactly that pair. A missing,
mismatched or damaged pair, or an unknown or invalid RECSYS_* setting, stops the start-up with one line that says
what is wrong and how to fix it (`bentoml serve` exits 1).

With RECSYS_SERVING__TOPOLOGY=remote the two model services run as `bentoml serve service:Candidates` and
`bentoml serve service:Ranker` of their own (other containers or hosts, each scaled on its own), and the entry
reaches them at RECSYS_SERVING__CANDIDATES_URL and RECSYS_SERVING__RANKER_URL (`bentoml.depends(url=...)`); it
answers 503, and its /readyz too, while either is down or serves another model pair than its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from functools import cache
from pathlib import Path
from typing import Any, cast

import aiohttp
import bentoml
import prometheus_client
from bentoml.exceptions import BentoMLException, InvalidArgument
from starlette.responses import Response
from threadpoolctl import threadpool_limits

from recsys.core import model_store
from recsys.settings import SettingsError, get_settings

try:  # before the serving modules, which read the settings as they are imported
    SETTINGS = get_settings()  # the service declarations below are made of them
except SettingsError as exc:
    raise SystemExit(f"recsys: cannot serve: {exc}") from None  # one line, no traceback; `bentoml serve` exits 1

SOURCE_DIR = Path(__file__).parent
try:  # the version names the models BentoML packs and resolves (the services' model_ref); a look-up, no loading
    VERSION = model_store.resolve_version(SETTINGS.serving.model_version, source_dir=SOURCE_DIR)
    NO_PAIR: model_store.ModelStoreError | None = None
except model_store.ModelStoreError as exc:  # still importable; serving refuses to start (settle_model_pair)
    VERSION, NO_PAIR = "latest", exc

from recsys.core.candidates import Profile
from recsys.serving import (
    api_methods,
    connections,
    flask_compat,
    gc_watch,
    hops,
    page_cache,
    parse_once,
    request_metrics,
    request_timer,
    reuseport,
    shutdown,
    tracing,
    wire,
)
from recsys.serving.answers import Answer, answer_json, batch_json
from recsys.serving.batcher import MicroBatcher
from recsys.serving.edge import EntryEdge
from recsys.serving.errors import ModelServiceDown, unavailable
from recsys.serving.handlers import candidate_answers, rank_answers, warm_up_queries, warm_up_requests
from recsys.serving.openapi import api_info
from recsys.serving.payloads import WARM, CandidateAnswer, Query, Ranked, RankRequest, is_warm
from recsys.serving.schemas import BatchRequest, BatchResponse, RecommendRequest, RecommendResponse, UserFeatures, unknown_label
from recsys.serving.server_process import pin_model_version, use_own_prometheus_dir
from recsys.serving.web import create_app as web_page

logging.getLogger("recsys").setLevel(SETTINGS.log_level)  # BentoML's root logger passes WARNING and above only
# before BentoML prepares its Prometheus folder, which it does before any hook runs (recsys/serving/server_process.py)
use_own_prometheus_dir()
request_timer.apply(SETTINGS.serving.cancel_request_timers)  # before BentoML builds any service's app
tracing.apply()  # likewise: no spans unless tracing is configured
api_methods.apply()  # API methods bound once per service instance, not per request
parse_once.apply()  # the entry's API methods take the request its edge validated: the body is parsed once
request_metrics.apply()  # BentoML's request metrics: each route's labelled series looked up once
hops.apply()  # a pickled call between the services in one chunk, not one per numpy array
connections.apply(SETTINGS.serving.idle_timeout_s)  # before a worker starts its HTTP server
reuseport.apply(SETTINGS.serving.workers)  # likewise: each entry worker accepts on a socket of its own
shutdown.apply("recommender", SETTINGS.serving.drain_timeout_s)  # the entry drains before the models stop

# Calls between services recycle their connection pool after `max_requests`; in-flight calls then fail under
# load (bentoml#5540), so the pool is effectively never recycled.
INTERNAL = {"workers": 1, "traffic": {"timeout": 20}, "runner_connection": {"max_requests": 1_000_000_000},
            "logging": {"access": {"enabled": False}},
            "http": {"host": "127.0.0.1"}}  # served on their own (`remote`): loopback unless `--host`/BENTOML_HOST
BATCHING = {"batchable": SETTINGS.serving.batching, "max_batch_size": SETTINGS.serving.max_batch_size,
            "max_latency_ms": SETTINGS.serving.max_latency_ms}


@cache
def settle_model_pair() -> None:
    """Once in `bentoml serve` itself, before any worker starts: the pair must be there, belong together and be
    readable, or the start-up stops with one line. The same fault found later, as a model service loads its
    model in its own worker, would not stop it: BentoML restarts that worker over and over while the other
    services answer. Every worker, and every restart of one, then loads exactly this pair. Each of the three
    services declares it (BentoML's deployment hook), so a model service served on its own (`remote`) settles its
    pair too; in one `bentoml serve` it runs once. It then reads the pair's files into the page cache
    (recsys/serving/page_cache.py)."""
    try:
        if NO_PAIR is not None:
            raise NO_PAIR
        model_store.servable_version(VERSION)
    except model_store.ModelStoreError as exc:
        raise SystemExit(f"recsys: cannot serve: {exc}") from None  # one line, no traceback; exits 1
    pin_model_version(VERSION)
    if SETTINGS.serving.read_ahead:
        page_cache.read_ahead(Path(model_store.get_model(name, VERSION).path)
                              for name in (model_store.CANDIDATES, model_store.RANKER))


# ON_THE_LOOP: a model service computes each batch on its event loop. BentoML runs a sync API method in a worker
# thread: per call two thread hand-offs, each a wake-up that waits for a core on a busy machine, on the request's
# critical path; and a model service computes one batch at a time anyway (BentoML's `threads`: 1). The fused
# entry still computes in a worker thread (Recommender.__init__), where its event loop has requests to serve meanwhile.


@bentoml.service(name="candidates", **INTERNAL)
class Candidates:
    model_ref = bentoml.models.BentoModel(f"{model_store.CANDIDATES}:{VERSION}")
    settle_model_pair = bentoml.on_deployment(settle_model_pair)

    def __init__(self) -> None:
        # OpenBLAS threads busy-wait between the small per-batch matmuls: 5x the CPU per request for nothing
        threadpool_limits(SETTINGS.serving.blas_threads)
        self.model = model_store.load_candidates(self.model_ref, threads=SETTINGS.serving.blas_threads,
                                                 stored_lists=SETTINGS.candidates.stored_lists,
                                                 score_dismissed=model_store.ranker_reads(VERSION, "ease_dismissed"))
        self.answer(cast(list[dict[str, Any]], warm_up_queries(self.model)))  # first calls are dear (handlers.py)
        gc_watch.settle(SETTINGS.serving.freeze_startup_heap, SETTINGS.serving.gc_threshold)

    def answer(self, queries: list[dict[str, Any]]) -> list[dict[str, Any]]:  # list[Query] -> list[CandidateAnswer], packed
        answers = candidate_answers(self.model, cast(list[Query], queries), SETTINGS.candidates, SETTINGS.serving.max_top_k)
        return wire.pack(queries, cast(list[dict[str, Any]], answers), model_version=VERSION)

    @bentoml.api(**BATCHING)
    async def generate(self, queries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self.answer(queries)  # on the event loop (ON_THE_LOOP)

    @bentoml.api
    def model_version(self) -> str:
        """The model pair this process serves: the entry checks it against its own."""
        return VERSION


@bentoml.service(name="ranker", **INTERNAL)
class Ranker:
    model_ref = bentoml.models.BentoModel(f"{model_store.RANKER}:{VERSION}")
    settle_model_pair = bentoml.on_deployment(settle_model_pair)

    def __init__(self) -> None:
        bundle = model_store.load_ranker(self.model_ref)
        self.reranker = bundle.reranker
        for batch in warm_up_requests(self.reranker):  # likewise
            self.answer(cast(list[dict[str, Any]], batch))
        gc_watch.settle(SETTINGS.serving.freeze_startup_heap, SETTINGS.serving.gc_threshold)

    def answer(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:  # list[RankRequest] -> list[Ranked], packed
        answers = rank_answers(self.reranker, self.reranker.assembler.item_ids, cast(list[RankRequest], wire.unpack(requests)))
        return wire.pack(requests, cast(list[dict[str, Any]], answers), model_version=VERSION)

    @bentoml.api(**BATCHING)
    async def rank(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self.answer(requests)  # on the event loop (ON_THE_LOOP)

    @bentoml.api
    def model_version(self) -> str:
        """The model pair this process serves: the entry checks it against its own."""
        return VERSION


async def _call(stage: str, call: Awaitable[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """A model service's answer, or a 503 the client can act on when that process is down, restarting or stuck
    (a dead process otherwise surfaces as a bare 500 and a restarting one as a hang), or serves another model pair
    than the entry (a model service of another training, `remote` topology)."""
    try:
        answers = await asyncio.wait_for(call, SETTINGS.serving.dependency_timeout_s)
    except (OSError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
        raise ModelServiceDown(f"the {stage} model service is unavailable ({type(exc).__name__}); it restarts "
                               "by itself, retry in a few seconds") from exc
    if other := {a["model_version"] for a in answers} - {VERSION}:
        raise ModelServiceDown(_other_pair(stage, other.pop()))
    return answers


def _other_pair(stage: str, version: str) -> str:
    return (f"the {stage} model service serves model pair {version}, not this entry's {VERSION}; deploy the "
            "services of one training together (or pin RECSYS_SERVING__MODEL_VERSION on all of them)")


JSON = "application/json"
# a `remote` stage answers over JSON: arrays encoded (wire.py)
RAW_ARRAYS = wire.TAKES_RAW if SETTINGS.serving.topology != "remote" else None
Recommend = Callable[[list[RecommendRequest]], Awaitable[list[Answer]]]  # the entry's two micro-batchers
Stage = Callable[[list[Any]], Awaitable[list[dict[str, Any]]]]  # a batch's call to a model service
BATCH_SIZE = prometheus_client.Histogram(name="recsys_entry_batch_size", documentation="users per call to the model services",
                                       buckets=(1, 2, 4, 8, 16, 32, 64, 128))


@cache
def demographic_labels() -> dict[str, frozenset[str]]:
    """The labels `user_features` may use: the training data's, read from the candidates model (once per worker)."""
    return model_store.load_demographic_labels(model_store.get_model(model_store.CANDIDATES, VERSION))


async def _recommend_one(request: RecommendRequest) -> Answer | Response:
    """POST /recommend's answer, for the route BentoML cannot declare (a GET); the instance is this worker's."""
    return await bentoml.get_current_service().recommend_one(request)


# The traffic layer (recsys/serving/traffic.py) replaces BentoML's: no max_concurrency, and no BentoML timer at all
# (recsys/serving/request_timer.py); this timeout only remains for BentoML's "before" baseline (cancel_request_timers off).
TRAFFIC_BACKSTOP_S = SETTINGS.serving.body_timeout_s + SETTINGS.serving.request_timeout_s + 5


@bentoml.asgi_app(web_page(VERSION), path="/ui")  # the web page (recsys/serving/web); its data loads at start-up
@bentoml.asgi_app(flask_compat.create_app(_recommend_one))  # GET /get_recommendation, the Flask reference's route
@bentoml.service(name="recommender", workers=SETTINGS.serving.workers, traffic={"timeout": TRAFFIC_BACKSTOP_S},
                  logging={"access": {"enabled": SETTINGS.serving.access_log == "all"}},
                  http={"host": "127.0.0.1"})  # loopback unless told otherwise (`--host`, BENTOML_HOST: the image)
class Recommender:
    if SETTINGS.serving.topology == "split":  # each model in its own process, reached over BentoML's HTTP
        candidates = bentoml.depends(Candidates)
        ranker = bentoml.depends(Ranker)
    elif SETTINGS.serving.topology == "remote":  # each model service is a `bentoml serve` of its own, found by address
        candidates = bentoml.depends(Candidates, url=SETTINGS.serving.candidates_url)
        ranker = bentoml.depends(Ranker, url=SETTINGS.serving.ranker_url)

    settle_model_pair = bentoml.on_deployment(settle_model_pair)

    def __init__(self) -> None:
        serving = SETTINGS.serving
        self.labels = demographic_labels()
        self.generate: Stage
        self.rank: Stage
        if serving.topology == "fused":  # both models in this process: no hops, compute in a worker thread
            candidates, ranker = Candidates(), Ranker()
            self.generate = lambda queries: asyncio.to_thread(candidates.answer, queries)
            self.rank = lambda requests: asyncio.to_thread(ranker.answer, requests)
        else:  # BentoML's clients of the model services (their methods exist once the server has started them)
            self.generate = lambda queries: self.candidates.to_async.generate(queries)
            self.rank = lambda requests: self.ranker.to_async.rank(requests)
        # single requests and /recommend/batch calls are coalesced apart, each with its own calls in flight:
        # a single never waits in a queue behind big batches
        self.run: Recommend
        self.run_batch: Recommend
        self.run, self.run_batch = (
            (MicroBatcher(self._recommend, serving.max_batch_size, serving.max_in_flight, on_batch=BATCH_SIZE.observe),
             MicroBatcher(self._recommend, serving.max_batch_size, serving.batch_calls_in_flight,
                          on_batch=BATCH_SIZE.observe))
            if serving.batching else (self._recommend, self._recommend))
        gc_watch.settle(serving.freeze_startup_heap, serving.gc_threshold)

    async def __is_ready__(self) -> bool:
        """`remote`: ready (/readyz 200) only while both model services answer with this entry's model pair, so a
        load balancer or Kubernetes sends no traffic to an entry whose stages are down or from another training."""
        if SETTINGS.serving.topology != "remote":
            return True
        try:
            versions = await asyncio.wait_for(asyncio.gather(self.candidates.to_async.model_version(),
                                                             self.ranker.to_async.model_version()),
                                              SETTINGS.serving.dependency_timeout_s)
        except (OSError, aiohttp.ClientError, asyncio.TimeoutError, BentoMLException):
            return False
        return tuple(versions) == (VERSION, VERSION)

    async def _recommend(self, requests: list[RecommendRequest]) -> list[Answer]:
        queries: list[Query] = [{"user_id": r.user_id, "exclude_seen": r.exclude_seen,
                                 "user_features": cast(Profile, r.user_features.model_dump()) if r.user_features else None,
                                 "raw_arrays": RAW_ARRAYS} for r in requests]
        packed = await _call("candidates", self.generate(queries))
        candidates = cast(list[CandidateAnswer], wire.unpack(packed))
        warm = [j for j, c in enumerate(candidates) if is_warm(c)]
        ranked = cast(list[Ranked], wire.unpack(await _call("ranker", self.rank([
            {**packed[j], "user_id": requests[j].user_id, "top_k": requests[j].top_k, wire.RAW: RAW_ARRAYS}
            for j in warm  # the candidates as they came
        ])))) if warm else []
        by_request = dict(zip(warm, ranked, strict=True))
        answers = []
        for j, (request, cand) in enumerate(zip(requests, candidates, strict=True)):
            if is_warm(cand):
                answers.append(Answer(request.user_id, by_request[j]["item_ids"], by_request[j]["scores"], WARM,
                                      by_request[j]["retrieved_by"]))
            else:
                answers.append(Answer(request.user_id, cand["item_ids"][: request.top_k], None, cand["source"]))
        return answers

    @bentoml.api(route="/recommend", input_spec=RecommendRequest)
    async def recommend(self, user_id: int, top_k: int = 10, exclude_seen: bool = True,
                        user_features: UserFeatures | None = None) -> RecommendResponse:
        """Top-k items for one user: LightFM candidates reranked by CatBoost; popularity for unknown users."""
        request = RecommendRequest(user_id=user_id, top_k=top_k, exclude_seen=exclude_seen, user_features=user_features)
        if problem := unknown_label([request], self.labels):
            raise InvalidArgument(problem)
        answer = await self.recommend_one(request)
        # RecommendResponse is the documented body (/docs.json); the JSON is written from the arrays (answers.py)
        return answer if isinstance(answer, Response) else Response(  # type: ignore[return-value]
            answer_json(answer, VERSION), media_type=JSON)

    async def recommend_one(self, request: RecommendRequest) -> Answer | Response:
        """One user's answer through the micro-batcher, or the 503 that says a model service is down."""
        try:
            return (await self.run([request]))[0]
        except ModelServiceDown as exc:
            return unavailable(exc)

    @bentoml.api(route="/recommend/batch", input_spec=BatchRequest)
    async def recommend_batch(self, requests: list[RecommendRequest]) -> BatchResponse:
        """Recommendations for up to `max_batch_users` users in one call."""
        if problem := unknown_label(requests, self.labels, prefix="requests."):
            raise InvalidArgument(problem)
        try:
            answers = await self.run_batch(requests)
        except ModelServiceDown as exc:
            return unavailable(exc)  # type: ignore[return-value]  # the 503, as BentoML passes a Response on
        # up to 10,000 recommendations: rendered off the event loop, so single requests keep flowing meanwhile
        # BatchResponse is the documented body (/docs.json), written from the arrays as in recommend
        return Response(await asyncio.to_thread(batch_json, answers, VERSION), media_type=JSON)  # type: ignore[return-value]


# @bentoml.service made the class a bentoml.Service; mypy cannot see that through BentoML's untyped decorator
ENTRY: bentoml.Service[Recommender] = Recommender
# the entry's one layer of its own (recsys/serving/edge.py): safe headers, error log, traffic limits, clean errors,
# the public spec and the timer gauge on /metrics
ENTRY.add_asgi_middleware(EntryEdge, limits=SETTINGS.serving, inputs={api.route: api.input_spec for api in ENTRY.apis.values()},
                          info=api_info(VERSION), labels=demographic_labels, log_errors=SETTINGS.serving.access_log == "errors")
