"""The training report: JSON for machines, Markdown and HTML (with two plots) for people."""

from __future__ import annotations

import html
import json
import os
import shutil
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from recsys.core.showcase import PLOT_FILES  # noqa: E402

MODELS = {"popular": "Popularity", "lightfm": "LightFM alone", "ease": "EASE", "two_stage": "LightFM + CatBoost"}


def metrics_table(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    metrics = report["evaluation"]["metrics"]
    columns = list(next(iter(metrics.values())))
    rows = [[MODELS.get(name, name)] + [f"{values[c]:.4f}" for c in columns] for name, values in metrics.items()]
    return ["model"] + columns, rows


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _plot_metrics(report: dict[str, Any], path: Path) -> None:
    metrics = report["evaluation"]["metrics"]
    names = [c for c in next(iter(metrics.values())) if not c.startswith("coverage")]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    width = 0.8 / len(metrics)
    for i, (model, values) in enumerate(metrics.items()):
        ax.bar([j + i * width for j in range(len(names))], [values[n] for n in names], width, label=MODELS.get(model, model))
    ax.set_xticks([j + width * (len(metrics) - 1) / 2 for j in range(len(names))], names)
    ax.set_title(f"Holdout metrics ({report['evaluation']['users']} users)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_importance(report: dict[str, Any], path: Path, top: int = 20) -> None:
    items = list(report["ranker"]["importance"].items())[:top][::-1]
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(items) + 1))
    ax.barh([k for k, _ in items], [v for _, v in items], color="#4c72b0")
    ax.set_title("CatBoost feature importance (PredictionValuesChange)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_plots(report: dict[str, Any], directory: Path) -> None:
    """The metric comparison and CatBoost's feature importance as PNG files in ``directory``."""
    metrics_png, importance_png = PLOT_FILES
    _plot_metrics(report, directory / metrics_png)
    _plot_importance(report, directory / importance_png)


def showcase_summary(report: dict[str, Any]) -> dict[str, Any]:
    """The part of the report the web page shows beside the served models (packed with them)."""
    header, rows = metrics_table(report)
    ev = report["evaluation"]
    return {"metrics": {"header": header, "rows": rows}, "candidate_recall": ev["candidate_recall"],
            "evaluation": {k: ev[k] for k in ("users", "cold_users", "k", "candidates_per_user")},
            "ranker": {k: report["ranker"][k] for k in ("rows", "train_users", "valid_users", "best_iteration")}}


def _markdown(report: dict[str, Any]) -> str:
    header, rows = metrics_table(report)
    ev = report["evaluation"]
    recall = ", ".join(f"{k} {v:.3f}" for k, v in ev["candidate_recall"].items())
    windows = "\n".join(f"| {name} | {w['rows']} | {w['users']} | {w['start']} | {w['end']} |"
                        for name, w in report["split"].items() if isinstance(w, dict))
    timings = "\n".join(f"| {k} | {v:.1f} |" for k, v in report["timings"].items())
    return f"""# Training report {report['run_id']}

Dataset **{report['dataset']}** (fingerprint `{report['dataset_fingerprint']}`), feature store `{report['feature_store_version']}`.
Models: {', '.join(f'`{t}`' for t in report['tags'])}.

## Offline evaluation (holdout window, {ev['users']} warm users, top-{ev['k']}, seen items filtered)

{_markdown_table(header, rows)}

Candidate recall (share of holdout items among the ~{ev['candidates_per_user']:.0f} candidates per user): {recall}.
{ev['cold_users']} holdout users had no history before the window (cold start: served by segment popularity).

![metrics](metrics.png)

## Windows ({report['split']['strategy']} split)

| window | rows | users | start | end |
|---|---|---|---|---|
{windows}

## Reranker

{report['ranker']['rows']} training rows, {report['ranker']['train_users']} train / {report['ranker']['valid_users']} validation users,
best iteration {report['ranker']['best_iteration']}.

![importance](importance.png)

## Timings (seconds)

| step | seconds |
|---|---|
{timings}
"""


def _html(report: dict[str, Any]) -> str:
    header, rows = metrics_table(report)
    table = "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>" + "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows) + "</table>"
    recall = "".join(f"<li>{html.escape(k)}: {v:.3f}</li>" for k, v in report["evaluation"]["candidate_recall"].items())
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Training report {report['run_id']}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}</style></head><body>
<h1>Training report {html.escape(report['run_id'])}</h1>
<p>Dataset <b>{html.escape(report['dataset'])}</b>, {report['evaluation']['users']} warm holdout users, top-{report['evaluation']['k']}.</p>
{table}<h2>Candidate recall</h2><ul>{recall}</ul>
<img src="metrics.png" alt="metrics"><h2>Reranker feature importance</h2><img src="importance.png" alt="importance">
</body></html>"""


def write_report(report: dict[str, Any], directory: Path) -> Path:
    """Write the report files to ``directory`` and point ``latest`` beside it at them."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "report.json").write_text(json.dumps(report, indent=2, default=str))
    write_plots(report, directory)
    (directory / "report.md").write_text(_markdown(report))
    (directory / "report.html").write_text(_html(report))
    _point_latest(directory)
    return directory


def _point_latest(directory: Path) -> None:
    """Swap the ``latest`` symlink in one rename: concurrent runs that deleted and re-copied a ``latest`` folder
    left it mixing two runs' files, or made copytree fail on a folder the other run had just created."""
    latest = directory.parent / "latest"
    if latest.is_dir() and not latest.is_symlink():  # a copy written before `latest` became a link
        shutil.rmtree(latest, ignore_errors=True)
    link = directory.parent / f".latest-{directory.name}"
    link.unlink(missing_ok=True)
    link.symlink_to(directory.name, target_is_directory=True)
    os.replace(link, latest)
