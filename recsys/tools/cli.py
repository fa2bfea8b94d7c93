"""`recsys`: the command-line face of the project (data, features, train, serve)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, NoReturn, get_args

import pandas as pd
from pydantic import ValidationError

from recsys.columns import Columns
from recsys.core.model_store import ModelStoreError
from recsys.data.schema import DataError, Dataset
from recsys.progress import Timings, setup_logging
from recsys.settings import (
    PROJECT_ROOT,
    DatasetName,
    Settings,
    SettingsError,
    SplitStrategy,
    SyntheticSize,
    describe_errors,
    get_settings,
)
from recsys.stopping import raise_if_stopped, stop_on_sigterm
from recsys.training.second_stage import RankerTrainingError
from recsys.training.split import SplitError

log = logging.getLogger("recsys")
DEFAULT_BUDGET = 600.0  # seconds of search, the most: on MovieLens-100k about 12-15 trials on a quiet 2-core
                        # machine; the first ones (the settings and the anchors) are the likeliest winners
DEFAULT_TRIALS = 100


def _add_data_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("dataset")
    group.add_argument("--dataset", choices=get_args(DatasetName),
                       help="which dataset to load (default: synthetic)")
    group.add_argument("--data-dir", type=Path, help="folder with a real dataset's files")
    group.add_argument("--size", choices=get_args(SyntheticSize), help="synthetic dataset size")
    group.add_argument("--seed", type=int, help="seed of the synthetic dataset, the models and the search (default 42)")
    group.add_argument("--rating-threshold", type=float, help="MovieLens: ratings >= this are positives")


def _add_split_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("time split")
    group.add_argument("--split", choices=get_args(SplitStrategy), help="split strategy (default: auto)")
    group.add_argument("--label-days", type=int, help="global split: days in the reranker's label window")
    group.add_argument("--holdout-days", type=int, help="global split: days in the evaluation window")
    group.add_argument("--label-frac", type=float, help="per-user split: share of each user's events as labels")
    group.add_argument("--holdout-frac", type=float, help="per-user split: share of each user's events held out")


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The settings object with the command-line flags applied on top of defaults and environment."""
    settings = get_settings()
    data_updates = {k: v for k, v in {
        "dataset": args.dataset, "data_dir": args.data_dir, "size": args.size, "seed": args.seed,
        "rating_threshold": args.rating_threshold,
    }.items() if v is not None}
    split_updates = {k: v for k, v in {
        "strategy": getattr(args, "split", None), "label_days": getattr(args, "label_days", None),
        "holdout_days": getattr(args, "holdout_days", None), "label_frac": getattr(args, "label_frac", None),
        "holdout_frac": getattr(args, "holdout_frac", None),
    }.items() if v is not None}
    for section, updates in (("data", data_updates), ("split", split_updates)):
        if updates:
            current = getattr(settings, section)
            try:
                checked = type(current).model_validate({**current.model_dump(), **updates})
            except ValidationError as exc:
                raise SettingsError(f"invalid option {describe_errors(exc, _flag)}") from None
            settings = settings.model_copy(update={section: checked})
    return settings


def _flag(loc: tuple[int | str, ...]) -> str:
    """The command-line flag of a data or split field (``strategy`` is ``--split``)."""
    return "--split" if loc == ("strategy",) else "--" + str(loc[0]).replace("_", "-")


def _file_system_error(exc: OSError) -> str:
    """One line for a file that cannot be written or read: disk full, read-only or missing folder..."""
    where = f"{exc.filename}: " if exc.filename else ""
    return f"file system error: {where}{exc.strerror or exc}"


def cmd_data(args: argparse.Namespace) -> int:
    from recsys.data.registry import load_dataset

    settings = settings_from_args(args)
    timings = Timings()
    with timings.step(f"load dataset '{settings.data.dataset}'"):
        dataset = load_dataset(settings.data)
    print(json.dumps(dataset.summary(), indent=2))
    if args.export:
        from recsys.data.export import WRITERS

        with timings.step(f"export to {args.export} ({args.format} format)"):
            WRITERS[args.format](dataset, args.export)
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    from recsys.data.registry import load_dataset
    from recsys.features.build import build_feature_tables
    from recsys.features.store import write_feature_store

    settings = settings_from_args(args)
    timings = Timings()
    with timings.step(f"load dataset '{settings.data.dataset}'"):
        dataset = load_dataset(settings.data)
    as_of = pd.Timestamp(args.as_of) if args.as_of else dataset.interactions[Columns.Datetime].max() + pd.Timedelta(days=1)
    out = args.out or settings.features_dir / dataset.name
    with timings.step(f"build features as of {as_of.date()}"):
        tables = build_feature_tables(dataset.interactions, dataset.users, dataset.items, as_of, dataset.dismissed)
    with timings.step(f"write feature store to {out}"):
        manifest = write_feature_store(tables, out, dataset.fingerprint())
    log.info("feature store %s: %d users x %d columns, %d items x %d columns", manifest["version"],
             len(tables.users), tables.users.shape[1], len(tables.items), tables.items.shape[1])
    print(timings.table())
    return 0


def _duration(text: str) -> float:
    """Seconds from ``600``, ``600s`` or ``10m``."""
    try:
        return float(text[:-1]) * 60 if text.endswith("m") else float(text.removesuffix("s"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 600, 600s or 10m") from None


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def _run_tune(settings: Settings, dataset: Dataset, args: argparse.Namespace) -> tuple[Settings, dict[str, Any]]:
    """Search, write the parameters file, and return the settings with them applied and the search's record."""
    from recsys.training.params import apply_params, write_params
    from recsys.training.tune import JOBS, tune

    result = tune(dataset, settings, args.budget, args.trials, args.jobs or JOBS)
    out = args.out or settings.home / "tuning" / f"{dataset.name}-{pd.Timestamp.now():%Y%m%d-%H%M%S}.json"
    write_params(out, result.params, result.tuning)
    log.info("parameters and search history written to %s (`recsys train --params %s` trains with them)", out, out)
    return apply_params(settings, result.params, str(out)), {**result.tuning, "params_file": str(out)}


def cmd_tune(args: argparse.Namespace) -> int:
    from recsys.data.registry import load_dataset

    settings = settings_from_args(args)
    timings = Timings()
    with timings.step(f"load dataset '{settings.data.dataset}'"):
        dataset = load_dataset(settings.data)
    with timings.step(f"hyperparameter search (budget {args.budget:.0f}s, at most {args.trials} trials)"):
        tuned, tuning = _run_tune(settings, dataset, args)
    if not args.train:
        return 0
    return _train_and_print(tuned, args.seeds, tuning, dataset)


def cmd_train(args: argparse.Namespace) -> int:
    from recsys.training.params import apply_params, read_params

    settings = settings_from_args(args)
    if getattr(args, "no_cache", False):
        settings = settings.model_copy(update={"cache": False})
    tuning, params_file, seeds = None, getattr(args, "params", None), getattr(args, "seeds", 1)  # `serve` has none
    evaluate_holdout = not getattr(args, "no_eval", False)
    if seeds > 1 and not evaluate_holdout:
        log.error("--seeds measures the spread of the offline metrics; with --no-eval there are none")
        return 2
    if params_file:
        params, tuning = read_params(params_file)
        settings = apply_params(settings, params, str(params_file))
        log.info("training with the parameters of %s: %s", params_file, json.dumps(params))
    if getattr(args, "tune", False):
        from recsys.data.registry import load_dataset

        dataset = load_dataset(settings.data)
        settings, tuning = _run_tune(settings, dataset, args)
        return _train_and_print(settings, seeds, tuning, dataset, evaluate_holdout)
    return _train_and_print(settings, seeds, tuning, evaluate_holdout=evaluate_holdout)


def _train_and_print(settings: Settings, seeds: int, tuning: dict[str, Any] | None, dataset: Dataset | None = None,
                     evaluate_holdout: bool = True) -> int:
    from recsys.training.pipeline import train
    from recsys.training.report import claims_table, evaluated, metrics_table, spread_note

    result = train(settings, dataset, seeds=seeds, tuning=tuning, evaluate_holdout=evaluate_holdout)
    if not evaluated(result.report):
        print(f"\noffline evaluation skipped: {result.report['evaluation']['skipped']}")
        print(f"models: {', '.join(result.tags)}\nreport: {result.report_dir / 'report.html'}")
        return 0
    header, rows = metrics_table(result.report)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("\n" + "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    recall = result.report["evaluation"]["candidate_recall"]
    print("candidate recall: " + ", ".join(f"{k} {v:.3f}" for k, v in recall.items()))
    print(spread_note(result.report))
    for claim in claims_table(result.report)[1]:
        print(f"  vs {claim[0]}, {claim[1]}: gap {claim[2]} ({claim[3]}, sd {claim[4] or '-'}): {claim[5]}")
    print(f"models: {', '.join(result.tags)}\nreport: {result.report_dir / 'report.html'}")
    return 0


def cmd_serve(args: argparse.Namespace) -> NoReturn:
    """Train on the chosen dataset if the store holds no model pair, then hand over to `bentoml serve`."""
    import os
    import shutil

    from recsys.core.model_store import resolve_version

    settings = settings_from_args(args)
    try:
        log.info("serving model pair %s", resolve_version(settings.serving.model_version))
    except ModelStoreError as exc:
        if settings.serving.model_version:
            raise
        log.info("%s -> training on dataset '%s' first", exc, settings.data.dataset)
        cmd_train(args)
    bentoml = shutil.which("bentoml", path=str(Path(sys.executable).parent)) or "bentoml"
    command = [bentoml, "serve", "service:Recommender", "--host", args.host, "--port", str(args.port)]
    log.info("starting %s (API on http://%s:%d, docs at /)", " ".join(command), args.host, args.port)
    os.chdir(PROJECT_ROOT)
    os.execv(bentoml, command)  # replaces this process: does not return


def cmd_loadtest(args: argparse.Namespace) -> int:
    from recsys.tools.loadtest import default_out_dir, run_loadtest

    out = args.out or default_out_dir(get_settings().reports_dir, args.command)
    try:
        s = run_loadtest(args.users, args.spawn_rate, args.duration, out, url=getattr(args, "url", None),
                         workers=args.workers)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    by = f" ({s['workers']} Locust workers)" if s["workers"] else ""
    print(f"{s['requests']} requests in {s['duration']} with {s['users']} users{by}: {s['rps']:.1f} req/s, "
          f"p50 {s['p50_ms']:.0f} ms, p95 {s['p95_ms']:.0f} ms, p99 {s['p99_ms']:.0f} ms, {s['failures']} failures")
    grown = []
    for name, m in s.get("memory", {}).items():
        print(f"RSS {name}: {m['start_mb']:.0f} MB at the start, {m['mid_mb']:.0f} MB half-way, {m['end_mb']:.0f} MB "
              f"at the end ({m['growth_mb']:+.1f} MB, {m['growth_pct']:+.1f}% in the second half), "
              f"peak {m['peak_mb']:.0f} MB")
        if args.command == "soak" and m["growth_pct"] > args.max_growth_pct:
            grown.append(name)
    print(f"reports: {out}/locust.html, {out}/locust_stats.csv, {out}/summary.json")
    if grown:
        log.error("memory kept growing in %s (more than %.0f%% in the second half)", ", ".join(grown),
                  args.max_growth_pct)
    return 1 if s["failures"] or grown else 0


def cmd_bench(args: argparse.Namespace) -> int:
    from datetime import datetime

    from recsys.tools.benchmark import LoadGeneratorMissing, run_benchmark

    out = args.out or get_settings().reports_dir / f"benchmark-{datetime.now():%Y%m%d-%H%M%S}"
    try:
        run_benchmark(out, seconds=args.seconds, scaling=not args.no_scaling, connections=args.connections,
                      configs=args.config)
    except (LoadGeneratorMissing, ValueError) as exc:
        log.error("%s", exc)
        return 2
    print((out / "benchmark.md").read_text())
    print(f"report: {out}/benchmark.json")
    return 0


def cmd_footprint(args: argparse.Namespace) -> int:
    from recsys.tools.footprint import CONFIGS, default_out_dir, markdown, run_footprint

    out = args.out or default_out_dir(get_settings().reports_dir)
    print(markdown(run_footprint(out, args.config or list(CONFIGS), args.users)))
    print(f"report: {out}/footprint.json")
    return 0


def _add_tune_args(p: argparse.ArgumentParser, seeds: int) -> None:
    group = p.add_argument_group("tuning and spread")
    group.add_argument("--budget", type=_duration, default=DEFAULT_BUDGET,
                       help=f"wall-clock budget of the search: 600, 600s or 10m (default {DEFAULT_BUDGET:.0f}s)")
    group.add_argument("--trials", type=_positive, default=DEFAULT_TRIALS,
                       help=f"most trials of the search (default {DEFAULT_TRIALS})")
    group.add_argument("--out", type=Path, help="parameters file to write (default: var/tuning/<dataset>-<time>.json)")
    group.add_argument("--jobs", type=_positive,
                       help="trials run at once, each on one core, in deterministic batches (default 1); which trials "
                            "run depends on it, not on the machine")
    group.add_argument("--seeds", type=_positive, default=seeds,
                       help=f"model seeds the offline evaluation is repeated with; the report gives mean ± sd "
                            f"(default {seeds})")


def _add_load_args(p: argparse.ArgumentParser, duration: str) -> None:
    p.add_argument("--users", type=int, default=32, help="simulated concurrent users")
    p.add_argument("--spawn-rate", type=float, default=8.0)
    p.add_argument("--duration", default=duration, help="run time, e.g. 30s, 2m")
    p.add_argument("--out", type=Path, help=f"report folder (default: var/reports/{p.prog.split()[-1]}-<time>)")
    p.add_argument("--workers", type=int, default=0, help="run Locust distributed: a master and this many worker "
                                                         "processes on loopback (default: one process)")
    p.set_defaults(func=cmd_loadtest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recsys", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("data", help="load a dataset, print its summary, optionally export it as Kion CSV files")
    _add_data_args(p)
    p.add_argument("--export", type=Path, help="write the dataset's files to this folder")
    p.add_argument("--format", choices=["kion", "movielens-100k"], default="kion", help="file format of --export")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("features", help="build the Parquet feature store from a dataset")
    _add_data_args(p)
    p.add_argument("--as-of", help="cut-off date (default: the day after the last interaction)")
    p.add_argument("--out", type=Path, help="output folder (default: var/features/<dataset>)")
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("train", help="train LightFM + CatBoost, evaluate offline, save both to the BentoML store")
    _add_data_args(p)
    _add_split_args(p)
    p.add_argument("--params", type=Path, help="a parameters file written by `recsys tune`")
    p.add_argument("--tune", action="store_true", help="run `recsys tune` first and train with what it found")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache of finished stages "
                                                           "(var/cache: the built-in dataset, the first-level fits)")
    p.add_argument("--no-eval", action="store_true", help="a production retrain of settings evaluated before: no "
                                                          "evaluation fit and no offline report (the models' "
                                                          "metadata says evaluated: false)")
    _add_tune_args(p, seeds=1)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("tune", help="search the parameters of both stages and the candidate mix on a validation "
                                    "window within a time budget, write them to a file and (by default) train with them")
    _add_data_args(p)
    _add_split_args(p)
    _add_tune_args(p, seeds=3)
    p.add_argument("--train", action=argparse.BooleanOptionalAction, default=True,
                   help="train and save the model pair with the parameters found (default: yes)")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("serve", help="train if no models are in the store, then serve the API with BentoML")
    _add_data_args(p)
    _add_split_args(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=3000)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("loadtest", help="bounded headless Locust run on loopback; prints req/s, p50/p95/p99")
    _add_load_args(p, "60s")
    p.add_argument("--url", help="a running server on loopback (default: start one)")

    p = sub.add_parser("soak", help="long bounded Locust run on loopback with RSS of every service process sampled; "
                                    "fails on any failed request or memory growth")
    _add_load_args(p, "5m")
    p.add_argument("--max-growth-pct", type=float, default=5.0, help="allowed RSS growth over the second half of the run")

    p = sub.add_parser("bench", help="benchmark with hey: plain ASGI ceiling, /healthz and /recommend split and fused, "
                                     "before/after the tail-latency fixes, GC pauses, compute")
    p.add_argument("--seconds", type=float, default=10.0, help="duration of each measured load level")
    p.add_argument("--no-scaling", action="store_true", help="skip the catalogue scaling part")
    p.add_argument("--connections", type=int, default=32, help="hey's keep-alive connections per level")
    p.add_argument("--config", action="append", help="only this configuration: split, fused, split-before or "
                                                     "fused-before (repeatable; default: all four)")
    p.add_argument("--out", type=Path, help="report folder (default: var/reports/benchmark-<time>)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("footprint", help="start-up time to /readyz and memory (RSS, PSS, shared/private) of every "
                                         "service process, split and fused, at start-up and after requests")
    p.add_argument("--config", action="append", choices=["split", "fused", "fused-2"],
                   help="only this configuration (repeatable; default: all three; fused-2: two entry workers)")
    p.add_argument("--users", type=int, default=2_000, help="distinct served users asked for before the second reading")
    p.add_argument("--out", type=Path, help="report folder (default: var/reports/footprint-<time>)")
    p.set_defaults(func=cmd_footprint)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = get_settings()
    except SettingsError as exc:  # before logging is set up: its level is a setting too
        print(f"recsys: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level)
    stop_on_sigterm()
    try:
        code = args.func(args)
        raise_if_stopped()
        return code
    except (DataError, SplitError, RankerTrainingError, ModelStoreError, SettingsError) as exc:
        log.error("%s", exc)
        return 2
    except OSError as exc:
        log.error("%s", _file_system_error(exc))
        return 2


if __name__ == "__main__":
    sys.exit(main())
