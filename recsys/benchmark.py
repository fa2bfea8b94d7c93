"""`recsys bench`: how fast the service is and where the time goes, measured side by side in one run.

1. the framework's ceiling: the same server's trivial `/healthz`;
2. `/recommend` at 1, 8, 32 and 64 concurrent clients, in the default three-process topology (`split`) and with
   both models inside the entry process (`fused`);
3. batching on vs off at 32 clients, in both topologies;
4. the in-process compute floor: candidates, feature assembly and CatBoost per request, without HTTP;
5. catalogue scaling (random LightFM-shaped vectors for 10k / 100k / 1M items): candidate generation and the
   whole request's compute.

Every HTTP level also records the CPU milliseconds each process (and the load client) spent per request, read
from /proc: that is where the time goes, and unlike latency it does not depend on what else the machine runs.
Load comes from closed-loop asyncio clients on loopback, each run bounded in time. Client and server share the
machine's cores, so figures are for comparing, not absolute capacity.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import platform
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import aiohttp
import numpy as np
from threadpoolctl import threadpool_limits

from recsys import model_store
from recsys.candidates import CandidateBatch, CandidateModel
from recsys.reranker import FeatureAssembler, Reranker
from recsys.settings import get_settings
from serving.handlers import candidate_answers, rank_answers
from serving.process import Server

log = logging.getLogger("recsys")


@dataclass
class LoadResult:
    name: str
    clients: int
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    completed: int  # including the warm-up: what the CPU figures are divided by


async def _load(url: str, bodies: list[dict] | None, clients: int, seconds: float, name: str,
                warmup: float = 1.0) -> LoadResult:
    """Closed-loop clients for `warmup` + `seconds`; only requests started after the warm-up are timed, so the
    connection set-up burst of the first moments does not pass for a steady-state tail. Errors count throughout."""
    latencies: list[float] = []
    errors = completed = 0
    measure_from = time.perf_counter() + warmup
    deadline = measure_from + seconds
    rng = np.random.default_rng(clients)

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal errors, completed
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            try:
                if bodies is None:
                    async with session.get(url) as response:
                        await response.read()
                        ok = response.status == 200
                else:
                    async with session.post(url, json=bodies[rng.integers(len(bodies))]) as response:
                        ok = response.status == 200 and (await response.json())["status"] == "success"
            except (aiohttp.ClientError, asyncio.TimeoutError):
                ok = False
            if start >= measure_from:
                latencies.append(time.perf_counter() - start)
            errors += not ok
            completed += 1

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        await asyncio.gather(*(worker(session) for _ in range(clients)))
    elapsed = time.perf_counter() - measure_from
    ms = np.array(latencies) * 1000
    return LoadResult(name, clients, len(ms), errors, len(ms) / elapsed,
                      *(float(p) for p in np.percentile(ms, [50, 95, 99]).round(2)), completed)


def _bodies(model: CandidateModel, n: int = 5000) -> list[dict]:
    rng = np.random.default_rng(0)
    return [{"user_id": int(u), "top_k": 10} for u in rng.choice(model.user_ids, n)]


def _timed(fn, repeat: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat * 1000


def in_process(model: CandidateModel, bundle: model_store.RankerBundle, users: np.ndarray) -> dict:
    """Milliseconds per call of each stage, for 1 user and for a batch of 32, without HTTP."""
    settings = get_settings()
    reranker = bundle.reranker
    out = {}
    for batch in (1, 32):
        queries = [{"user_id": int(u), "exclude_seen": True} for u in users[:batch]]
        cands = candidate_answers(model, queries, settings.candidates, settings.serving.max_top_k)
        requests = [{"user_id": q["user_id"], "top_k": 10, **c} for q, c in zip(queries, cands)]
        sizes = [len(c["items"]) for c in cands]
        flat = CandidateBatch(np.repeat(np.arange(batch), sizes), np.concatenate([c["items"] for c in cands]),
                              np.vstack([c["features"] for c in cands]))
        ids = np.array([q["user_id"] for q in queries])
        data = reranker.assembler.assemble(ids, flat)
        repeat = 200 if batch == 1 else 20
        out[f"batch_{batch}"] = {
            "candidates_ms": _timed(lambda: candidate_answers(model, queries, settings.candidates, 100), repeat),
            "features_ms": _timed(lambda: reranker.assembler.assemble(ids, flat), repeat),
            "catboost_ms": _timed(lambda: reranker.model.predict(data, prediction_type="RawFormulaVal",
                                                                 thread_count=1), repeat),
            "rank_total_ms": _timed(lambda: rank_answers(reranker, reranker.assembler.item_ids, requests), repeat),
            "candidates_per_user": float(np.mean(sizes)),
        }
    return out


def catalogue_scaling(bundle: model_store.RankerBundle, users: np.ndarray,
                      sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000), dim: int = 65) -> dict:
    """Candidate generation and the whole request's compute (candidates + features + CatBoost + top-k) as the
    catalogue grows: LightFM-shaped random vectors, item features recycled from the trained feature store."""
    settings = get_settings()
    rng = np.random.default_rng(0)
    trained_items = bundle.reranker.assembler.item_ids
    out = {}
    for n_items in sizes:
        n_users = 1000
        seen = rng.integers(0, n_items, (n_users, 20)).astype(np.int32)
        model = CandidateModel(
            user_ids=np.sort(users[:n_users]), item_ids=np.resize(trained_items, n_items),
            user_vectors=rng.normal(size=(n_users, dim)).astype(np.float32),
            item_vectors=rng.normal(size=(n_items, dim)).astype(np.float32),
            seen_indptr=np.arange(0, n_users * 20 + 1, 20, dtype=np.int64), seen_indices=seen.ravel(),
            popular=rng.permutation(n_items).astype(np.int32), segment_keys=np.array([], dtype=str),
            segment_popular=np.zeros((0, 10), dtype=np.int32),
            cooc_indices=rng.integers(0, n_items, (n_items, 30)).astype(np.int32),
            cooc_scores=rng.random((n_items, 30), dtype=np.float32))
        reranker = Reranker(bundle.reranker.model, FeatureAssembler(bundle.features.users, bundle.features.items,
                                                                    model.item_ids))
        out[n_items] = {}
        for b in (1, 32):
            queries = [{"user_id": int(u), "exclude_seen": True} for u in model.user_ids[:b]]

            def whole(queries: list[dict] = queries) -> list[dict]:
                cands = candidate_answers(model, queries, settings.candidates, settings.serving.max_top_k)
                return rank_answers(reranker, model.item_ids, [{"user_id": q["user_id"], "top_k": 10, **c}
                                                               for q, c in zip(queries, cands)])

            repeat = 20 if b == 1 else 5
            out[n_items][f"candidates_{b}_ms"] = _timed(
                lambda: candidate_answers(model, queries, settings.candidates, settings.serving.max_top_k), repeat)
            out[n_items][f"whole_{b}_ms"] = _timed(whole, repeat)
        log.info("catalogue %d items: %s", n_items, out[n_items])
    return out


def _measure(server: Server, path: str, bodies: list[dict] | None, clients: int, seconds: float,
             config: str) -> dict:
    """One closed-loop load level, with the CPU each process (and this client) spent per request."""
    before, client_before = server.cpu_seconds(), time.process_time()
    result = asdict(asyncio.run(_load(f"{server.url}{path}", bodies, clients, seconds, path.strip("/"))))
    after, client_cpu = server.cpu_seconds(), time.process_time() - client_before
    per_request = {name: (after[name] - before.get(name, 0)) * 1000 / result["completed"] for name in after}
    per_request["client"] = client_cpu * 1000 / result["completed"]
    result |= {"config": config, "cpu_ms_per_request": {k: round(v, 2) for k, v in per_request.items()}}
    log.info("%s %s x%d: %.0f req/s, p50 %.1f ms, p99 %.1f ms, %d errors, CPU ms/request %s", config, path, clients,
             result["rps"], result["p50_ms"], result["p99_ms"], result["errors"], result["cpu_ms_per_request"])
    return result


# (name, environment, what to run): the default three-process topology in full, then the variants at 32 clients
CONFIGS = [
    ("split", {}, [("/healthz", 1), ("/healthz", 32), ("/recommend", 1), ("/recommend", 8), ("/recommend", 32),
                   ("/recommend", 64)]),
    ("split, batching off", {"RECSYS_SERVING__BATCHING": "false"}, [("/recommend", 32)]),
    ("fused", {"RECSYS_SERVING__TOPOLOGY": "fused"}, [("/healthz", 32), ("/recommend", 1), ("/recommend", 32),
                                                      ("/recommend", 64)]),
    ("fused, batching off", {"RECSYS_SERVING__TOPOLOGY": "fused", "RECSYS_SERVING__BATCHING": "false"},
     [("/recommend", 32)]),
    ("fused, 2 workers", {"RECSYS_SERVING__TOPOLOGY": "fused", "RECSYS_SERVING__WORKERS": "2"},
     [("/healthz", 32), ("/recommend", 32), ("/recommend", 64)]),
]


def run_benchmark(out_dir: Path, seconds: float = 10.0, scaling: bool = True) -> dict:
    settings = get_settings()
    threadpool_limits(settings.serving.blas_threads)  # as in the candidates service
    version = model_store.resolve_version(settings.serving.model_version)
    model = model_store.load_candidates(model_store.get_model(model_store.CANDIDATES, version))
    bundle = model_store.load_ranker(model_store.get_model(model_store.RANKER, version))
    bodies = _bodies(model)
    report: dict = {"model_version": version, "items": len(model.item_ids), "users": len(model.user_ids),
                    "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                "platform": platform.platform()},
                    "started": datetime.now().isoformat(timespec="seconds"), "seconds_per_level": seconds,
                    "http": []}
    for config, env, levels in CONFIGS:
        with Server(env={**os.environ, **env}) as server:
            for path, clients in levels:
                report["http"].append(_measure(server, path, bodies if path == "/recommend" else None, clients,
                                               seconds, config))
    report["in_process"] = in_process(model, bundle, np.array([b["user_id"] for b in bodies]))
    if scaling:
        report["catalogue_scaling"] = catalogue_scaling(bundle, model.user_ids)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "benchmark.json").write_text(json.dumps(report, indent=2))
    (out_dir / "benchmark.md").write_text(markdown(report))
    return report


def markdown(report: dict) -> str:
    lines = [f"# Benchmark {report['started']}", "",
             f"Model {report['model_version']} ({report['users']} users, {report['items']} items); "
             f"{report['machine']['cpus']} CPUs, Python {report['machine']['python']}; "
             f"{report['seconds_per_level']:.0f} s per level; client and server share the machine.", "",
             "| config | endpoint | clients | req/s | p50 ms | p95 ms | p99 ms | errors | CPU ms per request |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['config']} | {r['name']} | {r['clients']} | {r['rps']:.0f} | {r['p50_ms']:.1f} | "
              f"{r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} | "
              + ", ".join(f"{k} {v:.2f}" for k, v in r["cpu_ms_per_request"].items() if v) + " |"
              for r in report["http"]]
    lines += ["", "| in process | candidates ms | features ms | CatBoost ms | rank total ms |", "|---|---|---|---|---|"]
    lines += [f"| {k} | {v['candidates_ms']:.2f} | {v['features_ms']:.2f} | {v['catboost_ms']:.2f} | "
              f"{v['rank_total_ms']:.2f} |" for k, v in report["in_process"].items()]
    if "catalogue_scaling" in report:
        lines += ["", "| catalogue items | candidates, 1 user ms | whole request, 1 user ms | candidates, 32 users ms "
                  "| whole request, 32 users ms |", "|---|---|---|---|---|"]
        lines += [f"| {n} | {v['candidates_1_ms']:.2f} | {v['whole_1_ms']:.2f} | {v['candidates_32_ms']:.1f} | "
                  f"{v['whole_32_ms']:.1f} |" for n, v in report["catalogue_scaling"].items()]
    return "\n".join(lines) + "\n"
