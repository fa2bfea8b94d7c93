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
from recsys.training.spread import CLAIM_SDS, MIN_SEEDS  # noqa: E402

MODELS = {"popular": "Popularity", "lightfm": "LightFM alone", "ease": "EASE", "two_stage": "LightFM + CatBoost"}


def _model_name(report: dict[str, Any], name: str) -> str:
    l2 = report.get("ease", {}).get("l2")
    return f"EASE (λ={l2:.3g})" if name == "ease" and l2 else MODELS.get(name, name)


def _seeds(report: dict[str, Any]) -> int:
    return len(report.get("offline_spread", {}).get("seeds", [])) or 1


def evaluated(report: dict[str, Any]) -> bool:
    """Whether the run measured offline metrics (`recsys train --no-eval` does not)."""
    return "metrics" in report["evaluation"]


def metrics_table(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Each model's metrics on the holdout window; with several model seeds, mean ± sd over them."""
    if not evaluated(report):
        return ["model"], []
    metrics = report["evaluation"]["metrics"]
    columns = list(next(iter(metrics.values())))
    if _seeds(report) > 1:
        spread = report["offline_spread"]["metrics"]
        rows = [[_model_name(report, name)] + [f"{spread[name][c]['mean']:.4f} ± {spread[name][c]['sd']:.4f}"
                                               for c in columns] for name in metrics]
    else:
        rows = [[_model_name(report, name)] + [f"{values[c]:.4f}" for c in columns] for name, values in metrics.items()]
    return ["model"] + columns, rows


def claims_table(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Whether the two-stage model beats each baseline, as far as the spread over seeds allows (training/spread.py)."""
    rows = [[_model_name(report, c["baseline"]), c["metric"], f"{c['mean_gap']:+.4f}",
             f"{c['relative_gap']:+.1%}" if c["relative_gap"] is not None else "",
             f"{c['sd_gap']:.4f}" if c["sd_gap"] is not None else "", c["verdict"]]
            for c in report.get("offline_spread", {}).get("claims", [])]
    return ["baseline", "metric", "mean gap", "relative", "sd of gap", "LightFM + CatBoost"], rows


def spread_note(report: dict[str, Any]) -> str:
    n = _seeds(report)
    if n == 1:
        return (f"One model seed: no spread measured, so no claim that one model beats another (`--seeds "
                f"{MIN_SEEDS}`).")
    seeds = ", ".join(map(str, report["offline_spread"]["seeds"]))
    return (f"Mean ± sample standard deviation over {n} model seeds ({seeds}): LightFM and the reranker change with "
            f"the seed, the split and the users evaluated do not; the models served are the first seed's.")


def epochs_note(report: dict[str, Any]) -> str:
    epochs = report.get("lightfm_epochs") or {}
    search = epochs.get("early_stopping")
    if not search:
        return f"LightFM trained a fixed {epochs.get('served', '?')} epochs (early stopping off)."
    steps = ", ".join(f"{e}: {v[search['metric']]:.4f}" for e, v in search["scores"].items())
    warm = epochs.get("warm_epochs")
    later = (f"the evaluation and serving fits each go on from the fit before for {warm} more ({epochs['served']} "
             f"in all for the served model)" if warm else "the evaluation and serving refits train that many")
    return (f"LightFM epochs: {search['best_epoch']}, the best {search['metric']} on the label window (stopped at "
            f"{search['stopped_at']}; per step {steps}); {later}.")


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


def _plot_tuning(tuning: dict[str, Any], path: Path) -> None:
    """The objective of every trial and the best so far, and which parameters mattered."""
    trials = tuning["trials"]
    done = [t for t in trials if t["state"] == "complete"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    below = [t for t in done if t["coverage"] < t["coverage_floor"]]
    left.scatter([t["number"] for t in done], [t["value"] for t in done], s=18, label="trial", color="#4c72b0")
    if below:
        left.scatter([t["number"] for t in below], [t["value"] for t in below], s=18, color="#c44e52",
                     label="coverage below the floor (penalised)")
    pruned = [t["number"] for t in trials if t["state"] == "pruned"]
    if pruned and done:
        left.scatter(pruned, [min(t["value"] for t in done)] * len(pruned), marker="x", color="#999999", s=18,
                     label="pruned")
    best, running = -float("inf"), []
    for t in trials:
        best = max(best, t["value"]) if t["state"] == "complete" else best
        running.append(best)
    left.step(range(len(trials)), running, where="post", color="#55a868", label="best so far")
    left.set(xlabel="trial", ylabel="objective (validation)", title=f"{len(trials)} trials in {tuning['elapsed_s']:.0f}s")
    left.legend(fontsize=7)
    shares = list(tuning["importance"].items())[::-1]
    right.barh([k for k, _ in shares], [v for _, v in shares], color="#4c72b0")
    right.set_title(f"what mattered ({tuning['importance_method'].split(' over')[0]})", fontsize=9)
    right.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_plots(report: dict[str, Any], directory: Path) -> None:
    """The metric comparison, CatBoost's feature importance and, for a tuned run, the search, as PNG files."""
    metrics_png, importance_png, tuning_png = PLOT_FILES
    if evaluated(report):
        _plot_metrics(report, directory / metrics_png)
    _plot_importance(report, directory / importance_png)
    if report.get("tuning"):
        _plot_tuning(report["tuning"], directory / tuning_png)


def showcase_summary(report: dict[str, Any]) -> dict[str, Any]:
    """The part of the report the web page shows beside the served models (packed with them)."""
    header, rows = metrics_table(report)
    ev = report["evaluation"]
    return {"metrics": {"header": header, "rows": rows}, "candidate_recall": ev.get("candidate_recall", {}),
            "evaluation": {k: ev[k] for k in ("users", "cold_users", "k", "candidates_per_user", "skipped") if k in ev},
            "ranker": {k: report["ranker"][k] for k in ("rows", "train_users", "valid_users", "best_iteration")},
            "spread": spread_note(report), "claims": claims_table(report)[1], "epochs": epochs_note(report),
            "tuning": tuning_summary(report.get("tuning"))}


def tuning_summary(tuning: dict[str, Any] | None) -> str | None:
    """One paragraph on the search behind the parameters: the web page's model panel and the report show it."""
    if not tuning:
        return None
    states = [t["state"] for t in tuning["trials"]]
    counts = ", ".join(f"{states.count(s)} {s}" for s in ("complete", "pruned", "fail") if states.count(s))
    mattered = ", ".join(f"{k} {v:.2f}" for k, v in list(tuning["importance"].items())[:5]) or "not measured"
    chosen = ", ".join(f"{k}={_short(v)}" for k, v in tuning["best_params"].items())
    return (f"Parameters from `recsys tune` ({tuning.get('params_file', '')}): {len(states)} trials ({counts}) in "
            f"{tuning['elapsed_s']:.0f}s of a {tuning['budget_s']:.0f}s budget, seed {tuning['seed']}. Objective: "
            f"{tuning['objective']}. Best: trial {tuning['best_trial']}, {tuning['best_value']:.4f} (trial 0, the "
            f"settings before tuning: {_trial_zero(tuning)}). Chosen: {chosen}. What mattered "
            f"({tuning['importance_method']}): {mattered}.")


def _trial_zero(tuning: dict[str, Any]) -> str:
    first = tuning["trials"][0]
    return f"{first['value']:.4f}" if first["value"] is not None else first["state"]


def ease_note(report: dict[str, Any]) -> str:
    ease = report.get("ease") or {}
    tried = ease.get("tuned_on_label_window") or {}
    if not tried:
        return f"EASE's L2 weight: {ease.get('l2')} (set, not tuned)." if ease.get("l2") else ""
    return (f"EASE's L2 weight {ease['l2']:.4g} scored best (ndcg) on the label window among "
            + ", ".join(f"{k}: {v:.4f}" for k, v in tried.items()) + ".")


def _tuning_markdown(report: dict[str, Any]) -> str:
    tuning = report.get("tuning")
    if not tuning:
        return ""
    rows = [[str(t["number"]), t["state"], f"{t['value']:.4f}" if t["value"] is not None else "",
             f"{t['ndcg']:.4f}" if "ndcg" in t else "", f"{t['coverage']:.3f}" if "coverage" in t else "",
             str(t.get("epochs", "")), f"{t.get('seconds', 0):.0f}",
             ", ".join(f"{k.split('.')[1]}={_short(v)}" for k, v in t["params"].items())] for t in tuning["trials"]]
    table = _markdown_table(["trial", "state", "objective", "ndcg", "coverage", "epochs", "s", "parameters"], rows)
    return f"""
## Tuning

{tuning_summary(tuning)}

![tuning](tuning.png)

<details><summary>every trial</summary>

{table}

</details>
"""


def _short(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _markdown(report: dict[str, Any]) -> str:
    header, rows = metrics_table(report)
    tuning_section = _tuning_markdown(report)
    windows = "\n".join(f"| {name} | {w['rows']} | {w['users']} | {w['start']} | {w['end']} |"
                        for name, w in report["split"].items() if isinstance(w, dict))
    timings = "\n".join(f"| {k} | {v:.1f} |" for k, v in report["timings"].items())
    return f"""# Training report {report['run_id']}

Dataset **{report['dataset']}** (fingerprint `{report['dataset_fingerprint']}`), feature store `{report['feature_store_version']}`.
Models: {', '.join(f'`{t}`' for t in report['tags'])}.

{_offline_markdown(report, header, rows)}

{epochs_note(report)}
{ease_note(report)}
{tuning_section}

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


def _offline_markdown(report: dict[str, Any], header: list[str], rows: list[list[str]]) -> str:
    ev = report["evaluation"]
    if not evaluated(report):
        return f"## Offline evaluation\n\nSkipped: {ev['skipped']}."
    recall = ", ".join(f"{k} {v:.3f}" for k, v in ev["candidate_recall"].items())
    return f"""## Offline evaluation (holdout window, {ev['users']} warm users, top-{ev['k']}, seen items filtered)

{_markdown_table(header, rows)}

{spread_note(report)}

Candidate recall (share of holdout items among the ~{ev['candidates_per_user']:.0f} candidates per user): {recall}.
{ev['cold_users']} holdout users had no history before the window (cold start: served by segment popularity).

![metrics](metrics.png)

### Does LightFM + CatBoost beat the baselines?

Claimed only with at least {MIN_SEEDS} seeds, when every seed's gap is positive and the mean gap is at least
{CLAIM_SDS:g} standard deviations of the gap over the seeds.

{_markdown_table(*claims_table(report))}"""


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    return "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>" + "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows) + "</table>"


def _offline_html(report: dict[str, Any]) -> str:
    ev = report["evaluation"]
    if not evaluated(report):
        return f"<h2>Offline evaluation</h2><p>Skipped: {html.escape(ev['skipped'])}.</p>"
    recall = "".join(f"<li>{html.escape(k)}: {v:.3f}</li>" for k, v in ev["candidate_recall"].items())
    return f"""<p>Dataset <b>{html.escape(report['dataset'])}</b>, {ev['users']} warm holdout users, top-{ev['k']}.</p>
{_html_table(*metrics_table(report))}<p>{html.escape(spread_note(report))}</p>
<h2>Does LightFM + CatBoost beat the baselines?</h2>{_html_table(*claims_table(report))}
<h2>Candidate recall</h2><ul>{recall}</ul>
<img src="metrics.png" alt="metrics">"""


def _html(report: dict[str, Any]) -> str:
    notes = "".join(f"<p>{html.escape(n)}</p>" for n in (epochs_note(report), ease_note(report)) if n)
    tuning = report.get("tuning")
    tuning_html = (f"<h2>Tuning</h2><p>{html.escape(tuning_summary(tuning) or '')}</p><img src=\"tuning.png\" alt=\"tuning\">"
                   if tuning else "")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Training report {report['run_id']}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}</style></head><body>
<h1>Training report {html.escape(report['run_id'])}</h1>
{_offline_html(report)}{notes}
<h2>Reranker feature importance</h2><img src="importance.png" alt="importance">
{tuning_html}</body></html>"""


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
