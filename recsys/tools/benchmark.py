"""`recsys bench`: how fast the service is and where the time goes, measured side by side in one run.

1. the machine's ceiling: a plain ASGI app under uvicorn returning "ok" (recsys/tools/plain_asgi.py);
2. the default three-process topology (`split`) and the fused one with a worker per core, each before (BentoML's
   request timer, an unfrozen start-up heap and Python's collector threshold: serving.cancel_request_timers and
   serving.freeze_startup_heap off, serving.gc_threshold 700) and after: `/healthz`, `/recommend` at the issue's
   steady 320 req/s, and `/recommend` flat out;
3. the in-process compute floor: candidates, feature assembly and CatBoost per request, without HTTP;
4. catalogue scaling (random LightFM-shaped vectors for 10k / 100k / 1M items): candidate generation and the
   whole request's compute.

Load comes from `hey`, a native (Go) load generator: a Python client sharing the two cores adds its own
event-loop and collector stalls to every latency it reports. hey's figures are checked against Little's law
(throughput x mean latency = busy connections, which must come out at the connection count when flat out).
Every level also records the CPU milliseconds each process (and hey) spent per request, read from /proc, the
garbage-collector pauses of each service process, from the service's `recsys_gc_pause_seconds` histogram, and
the machine's load average. Everything runs on loopback, each level bounded in time; client and server share the
machine's cores, so figures are for comparing.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import resource
import shutil
import subprocess
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client.parser import text_string_to_metric_families
from threadpoolctl import threadpool_limits

from recsys.core import model_store
from recsys.core.candidates import CandidateBatch, CandidateModel
from recsys.core.reranker import FRAME_FROM_ROWS, FeatureAssembler, Reranker
from recsys.serving.handlers import candidate_answers, rank_answers
from recsys.serving.payloads import CandidateAnswer, Query, Ranked, RankRequest, is_warm, rank_request
from recsys.settings import Settings, get_settings
from recsys.tools.process import PlainAsgiServer, Server

log = logging.getLogger("recsys")
WARMUP_S = 1.0  # untimed, before each level: connection set-up and first calls are not the steady state
PAUSES_PUBLISHED_S = 0.5  # a service publishes its collector pauses every 0.25 s (recsys/serving/gc_watch.py)
INSTALL_HEY = ("the benchmark's load generator `hey` is not installed: `make bench` installs it as root "
               "(apt-get install hey); elsewhere install your distribution's `hey` package or "
               "`go install github.com/rakyll/hey@latest`")


class LoadGeneratorMissing(RuntimeError):
    pass


def hey(url: str, seconds: float, clients: int, rate: float | None = None, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """One bounded `hey` run on loopback: throughput, latency percentiles in ms, status counts and errors.

    ``rate`` caps each connection's requests per second (`hey -q`); None is flat out.
    """
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"the benchmark loads loopback only, not {url}")
    binary = shutil.which("hey")
    if binary is None:
        raise LoadGeneratorMissing(INSTALL_HEY)
    command = [binary, "-z", f"{seconds}s", "-c", str(clients), "-t", "30"]
    if rate:
        command += ["-q", str(rate)]
    if body is not None:
        command += ["-m", "POST", "-T", "application/json", "-d", json.dumps(body)]
    out = subprocess.run([*command, url], capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    return parse_hey(out)


def parse_hey(out: str) -> dict[str, Any]:
    """The figures of hey's text summary (its percentiles are exact, over every response)."""
    def ms(label: str) -> float:
        found = re.search(rf"{label}:\s+([\d.]+) secs", out)
        return float(found.group(1)) * 1000 if found else float("nan")

    summary, _, failures = out.partition("Error distribution:")
    statuses = {int(code): int(n) for code, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", summary)}
    percentiles = {int(p): float(v) * 1000 for p, v in re.findall(r"(\d+)% in ([\d.]+) secs", summary)}
    transport_errors = sum(int(n) for n in re.findall(r"^\s*\[(\d+)\]", failures, re.M))
    rps = re.search(r"Requests/sec:\s+([\d.]+)", summary)
    return {"requests": sum(statuses.values()), "errors": sum(n for c, n in statuses.items() if c != 200)
            + transport_errors, "rps": float(rps.group(1)) if rps else 0.0, "mean_ms": ms("Average"),
            **{f"p{p}_ms": percentiles.get(p, float("nan")) for p in (50, 95, 99)}, "max_ms": ms("Slowest")}


def gc_pauses(url: str) -> dict[str, dict[str, float]]:
    """Cumulative collector pauses of every service process, from the service's Prometheus histogram, by
    "service/worker": seconds in total, collections, full (generation 2) ones, and per-bucket counts."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    out: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for family in text_string_to_metric_families(text):
        if family.name != "recsys_gc_pause_seconds":
            continue
        for s in family.samples:
            process = out[f"{s.labels['service']}/{s.labels['worker']}"]
            if s.name.endswith("_sum"):
                process["seconds"] += s.value
            elif s.name.endswith("_count"):
                process["collections"] += s.value
                if s.labels["generation"] == "2":
                    process["full"] += s.value
            elif s.name.endswith("_bucket"):
                process[f"le {s.labels['le']}"] += s.value
    return out


def _pause_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Pauses during one level, per process: total ms, collections, full collections, and the longest pause's
    bucket bound (the smallest bucket that holds every pause of the level)."""
    delta = {}
    for process, now in sorted(after.items()):
        then = before.get(process, {})
        grew = {k: v - then.get(k, 0.0) for k, v in now.items()}
        bounds = sorted((float(k[3:]), v) for k, v in grew.items() if k.startswith("le "))
        longest = next((b for b, n in bounds if n >= grew["collections"]), float("inf"))
        delta[process] = {"total_ms": round(grew["seconds"] * 1000, 1), "collections": int(grew["collections"]),
                          "full": int(grew["full"]), "longest_le_ms": longest * 1000}
    return delta


def _measure(server: Server, path: str, body: dict[str, Any] | None, clients: int, seconds: float, config: str,
             rate: float | None = None) -> dict[str, Any]:
    """One load level after an untimed warm-up, with the CPU each process (and hey) spent per request and the
    collector pauses of each service process."""
    url = f"{server.url}{path}"
    hey(url, WARMUP_S, clients, rate, body)
    load = os.getloadavg()  # what else the machine was running, for reading the figures
    pauses_before = gc_pauses(server.url) if server.metrics else {}
    before, client_before = server.cpu_seconds(), resource.getrusage(resource.RUSAGE_CHILDREN)
    result = hey(url, seconds, clients, rate, body)
    after, client_after = server.cpu_seconds(), resource.getrusage(resource.RUSAGE_CHILDREN)
    if server.metrics:
        time.sleep(PAUSES_PUBLISHED_S)
    done = max(result["requests"], 1)
    per_request = {name: (after[name] - before.get(name, 0)) * 1000 / done for name in after}
    per_request["client"] = (client_after.ru_utime + client_after.ru_stime - client_before.ru_utime
                             - client_before.ru_stime) * 1000 / done
    result |= {"config": config, "name": path.strip("/") or "/", "clients": clients, "offered_rps": rate and rate * clients,
               "busy_connections": round(result["rps"] * result["mean_ms"] / 1000, 1),  # Little's law
               "cpu_ms_per_request": {k: round(v, 2) for k, v in per_request.items()}, "load_average": load,
               "gc_pauses": _pause_delta(pauses_before, gc_pauses(server.url)) if server.metrics else {}}
    log.info("%s %s x%d%s: %.0f req/s, p50 %.1f ms, p99 %.1f ms, max %.1f ms, %d errors, busy %.1f; CPU ms/request "
             "%s; GC %s", config, path, clients, f" at {rate}/s each" if rate else "", result["rps"], result["p50_ms"],
             result["p99_ms"], result["max_ms"], result["errors"], result["busy_connections"],
             result["cpu_ms_per_request"], result["gc_pauses"])
    return result


def _body(model: CandidateModel) -> dict[str, Any]:
    """One warm user's request (hey sends the same body every time; the cost of a request barely depends on it)."""
    return {"user_id": int(model.user_ids[len(model.user_ids) // 2]), "top_k": 10}


def _timed(fn: Callable[[], object], repeat: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat * 1000


def _queries(user_ids: np.ndarray) -> list[Query]:
    return [{"user_id": int(u), "exclude_seen": True, "user_features": None} for u in user_ids]


def _rank_requests(queries: list[Query], answers: list[CandidateAnswer]) -> list[RankRequest]:
    """The ranker's requests for the benchmark's users, all known to the model."""
    return [rank_request(q["user_id"], 10, a) for q, a in zip(queries, answers, strict=True) if is_warm(a)]


def _whole_request(model: CandidateModel, queries: list[Query], settings: Settings, reranker: Reranker) -> list[Ranked]:
    """The compute of one request after parsing: candidates, then features, CatBoost and top-k."""
    cands = candidate_answers(model, queries, settings.candidates, settings.serving.max_top_k)
    return rank_answers(reranker, model.item_ids, _rank_requests(queries, cands))


def in_process(model: CandidateModel, bundle: model_store.RankerBundle, users: np.ndarray) -> dict[str, Any]:
    """Milliseconds per call of each stage, for 1 user and for a batch of 32, without HTTP."""
    settings = get_settings()
    reranker = bundle.reranker
    out: dict[str, Any] = {}
    for batch in (1, 32):
        queries = _queries(users[:batch])
        cands = candidate_answers(model, queries, settings.candidates, settings.serving.max_top_k)
        requests = _rank_requests(queries, cands)
        sizes = [len(r["items"]) for r in requests]
        flat = CandidateBatch.of_users([r["items"] for r in requests], [r["features"] for r in requests])
        ids = np.array([q["user_id"] for q in queries])
        features = reranker.assembler.frame if len(flat) >= FRAME_FROM_ROWS else reranker.assembler.assemble
        data = features(ids, flat)  # what Reranker.score gives CatBoost
        repeat = 200 if batch == 1 else 20
        out[f"batch_{batch}"] = {
            "candidates_ms": _timed(partial(candidate_answers, model, queries, settings.candidates, 100), repeat),
            "features_ms": _timed(partial(features, ids, flat), repeat),
            "catboost_ms": _timed(partial(reranker.model.predict, data, prediction_type="RawFormulaVal",
                                          thread_count=1), repeat),
            "rank_total_ms": _timed(partial(rank_answers, reranker, reranker.assembler.item_ids, requests), repeat),
            "candidates_per_user": float(np.mean(sizes)),
        }
    return out


def catalogue_scaling(bundle: model_store.RankerBundle, users: np.ndarray,
                      sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000), dim: int = 65) -> dict[int, Any]:
    """Candidate generation and the whole request's compute (candidates + features + CatBoost + top-k) as the
    catalogue grows: LightFM-shaped random vectors, item features recycled from the trained feature store."""
    settings = get_settings()
    rng = np.random.default_rng(0)
    trained_items = bundle.reranker.assembler.item_ids
    out: dict[int, Any] = {}
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
            queries = _queries(model.user_ids[:b])

            candidates = partial(candidate_answers, model, queries, settings.candidates, settings.serving.max_top_k)
            repeat = 20 if b == 1 else 5
            out[n_items][f"candidates_{b}_ms"] = _timed(candidates, repeat)
            out[n_items][f"whole_{b}_ms"] = _timed(partial(_whole_request, model, queries, settings, reranker), repeat)
        log.info("catalogue %d items: %s", n_items, out[n_items])
    return out


# The load: 32 keep-alive connections, at a steady 10 requests/s each (320 req/s) and flat out.
CONNECTIONS = 32
STEADY_RATE = 10
LEVELS = [("/healthz", None), ("/recommend", STEADY_RATE), ("/recommend", None)]
BEFORE = {"RECSYS_SERVING__CANCEL_REQUEST_TIMERS": "false", "RECSYS_SERVING__FREEZE_STARTUP_HEAP": "false",
          "RECSYS_SERVING__GC_THRESHOLD": "700"}  # Python's default
FUSED = {"RECSYS_SERVING__TOPOLOGY": "fused", "RECSYS_SERVING__WORKERS": str(os.cpu_count() or 1)}
# (name, environment, levels): the plain ASGI ceiling, then each topology before and after
CONFIGS = [
    ("split, before", BEFORE, LEVELS),
    ("split", {}, LEVELS),
    ("fused, worker per core, before", {**FUSED, **BEFORE}, LEVELS),
    ("fused, worker per core", FUSED, LEVELS),
]
CONFIG_KEYS = {"split-before": "split, before", "split": "split", "fused-before": "fused, worker per core, before",
               "fused": "fused, worker per core"}  # `recsys bench --config KEY`


def run_benchmark(out_dir: Path, seconds: float = 10.0, scaling: bool = True, connections: int = CONNECTIONS,
                  configs: list[str] | None = None) -> dict[str, Any]:
    """Every level of every config (``configs``: some of CONFIG_KEYS) at ``connections`` keep-alive connections."""
    if unknown := set(configs or ()) - set(CONFIG_KEYS):
        raise ValueError(f"unknown benchmark configuration {sorted(unknown)}; choose among {sorted(CONFIG_KEYS)}")
    chosen = {CONFIG_KEYS[key] for key in configs} if configs else set(CONFIG_KEYS.values())
    settings = get_settings()
    threadpool_limits(settings.serving.blas_threads)  # as in the candidates service
    version = model_store.resolve_version(settings.serving.model_version)
    model = model_store.load_candidates(model_store.get_model(model_store.CANDIDATES, version))
    bundle = model_store.load_ranker(model_store.get_model(model_store.RANKER, version))
    body = _body(model)
    report: dict[str, Any] = {"model_version": version, "items": len(model.item_ids), "users": len(model.user_ids),
                    "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                "platform": platform.platform()},
                    "started": datetime.now().isoformat(timespec="seconds"), "seconds_per_level": seconds,
                    "lightfm_top_n": model.index.describe() if model.index is not None else "exact", "http": []}
    with PlainAsgiServer() as server:
        report["http"].append(_measure(server, "/", None, connections, seconds, "plain ASGI (uvicorn)"))
    for config, env, levels in CONFIGS:
        if config not in chosen:
            continue
        with Server(env={**os.environ, **env}) as server:
            for path, rate in levels:
                report["http"].append(_measure(server, path, body if path == "/recommend" else None, connections,
                                               seconds, config, rate))
    report["in_process"] = in_process(model, bundle, np.random.default_rng(0).choice(model.user_ids, 32))
    if scaling:
        report["catalogue_scaling"] = catalogue_scaling(bundle, model.user_ids)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "benchmark.json").write_text(json.dumps(report, indent=2))
    (out_dir / "benchmark.md").write_text(markdown(report))
    return report


def _pauses_cell(pauses: dict[str, Any]) -> str:
    return "; ".join(f"{p} {v['total_ms']:.0f} ms, {v['full']} full, "
                     f"longest ≤ {v['longest_le_ms']:g} ms" for p, v in pauses.items()) or "–"


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# Benchmark {report['started']}", "",
             f"Model {report['model_version']} ({report['users']} users, {report['items']} items; LightFM top-n: "
             f"{report.get('lightfm_top_n', 'exact')}); "
             f"{report['machine']['cpus']} CPUs, Python {report['machine']['python']}; "
             f"{report['seconds_per_level']:.0f} s per level; client and server share the machine.", "",
             "| config | endpoint | connections | offered req/s | req/s | mean ms | p50 ms | p95 ms | p99 ms | max ms "
             "| errors | busy (Little) | GC pauses per process | CPU ms per request | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['config']} | {r['name']} | {r['clients']} | {r['offered_rps'] or 'flat out'} | {r['rps']:.0f} | "
              f"{r['mean_ms']:.1f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['max_ms']:.0f} | "
              f"{r['errors']} | {r['busy_connections']:.1f} | {_pauses_cell(r['gc_pauses'])} | "
              + ", ".join(f"{k} {v:.2f}" for k, v in r["cpu_ms_per_request"].items() if v)
              + f" | {r['load_average'][0]:.2f} |" for r in report["http"]]
    lines += ["", "Busy (Little's law) = req/s x mean latency: flat out it must come out at the connection count, "
              "or the client's figures are not to be trusted. Load = the machine's 1-minute load average as the "
              "level started (other work on the machine shows there)."]
    lines += ["", "| in process | candidates ms | features ms | CatBoost ms | rank total ms |", "|---|---|---|---|---|"]
    lines += [f"| {k} | {v['candidates_ms']:.2f} | {v['features_ms']:.2f} | {v['catboost_ms']:.2f} | "
              f"{v['rank_total_ms']:.2f} |" for k, v in report["in_process"].items()]
    if "catalogue_scaling" in report:
        lines += ["", "| catalogue items | candidates, 1 user ms | whole request, 1 user ms | candidates, 32 users ms "
                  "| whole request, 32 users ms |", "|---|---|---|---|---|"]
        lines += [f"| {n} | {v['candidates_1_ms']:.2f} | {v['whole_1_ms']:.2f} | {v['candidates_32_ms']:.1f} | "
                  f"{v['whole_32_ms']:.1f} |" for n, v in report["catalogue_scaling"].items()]
    return "\n".join(lines) + "\n"
