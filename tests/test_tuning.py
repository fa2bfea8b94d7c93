"""Issue 16: early stopping of LightFM's epochs, `recsys tune`, parameters that travel with the models, and the
spread over seeds. Tiny data, single-threaded fits, no quality margins: what is checked is that the machinery
does what it says, the same way every time.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import optuna
import pytest
import scipy.sparse as sp
from lightfm import LightFM

from recsys.data.synthetic import generate
from recsys.settings import Settings, SettingsError
from recsys.training import spread
from recsys.training.epochs import fit_with_early_stopping
from recsys.training.params import apply_params
from recsys.training.tune import (
    ANCHORS,
    SPACE,
    TIE_MARGIN,
    anchor_values,
    best_trial,
    current_values,
    new_study,
    objective_value,
    should_prune,
    tune,
)
from tests.helpers import BIN, ROOT, project_env, train

TRIALS = len(ANCHORS) + 1  # the anchors, then one sampled trial
SEED = 42


# ---- early stopping --------------------------------------------------------------------------------------

def _lightfm(seed: int = 3) -> tuple[LightFM, sp.coo_matrix]:
    rng = np.random.default_rng(0)
    matrix = sp.random(60, 40, density=0.15, random_state=rng, format="coo", dtype=np.float32)
    matrix.data[:] = 1.0
    return LightFM(no_components=8, loss="warp", random_state=seed), matrix


def _fit(model: LightFM, matrix: sp.coo_matrix):
    return lambda epochs: model.fit_partial(matrix, epochs=epochs, num_threads=1)


def _scripted(values: list[float]):
    """A validation score that follows a script, one value per step, whatever the model."""
    calls = iter(values)
    return lambda model: {"recall@10": next(calls)}


def test_early_stopping_keeps_the_best_epoch_state_and_stops_after_patience():
    model, matrix = _lightfm()
    best, search = fit_with_early_stopping(model, _fit(model, matrix), _scripted([0.1, 0.3, 0.2, 0.25, 0.9]),
                                           "recall@10", max_epochs=20, every=2, patience=2)
    # best after 4 epochs, then two steps without gain: stopped at 8, the 0.9 of step 5 never reached
    assert search.best_epoch == 4 and search.stopped_at == 8 and list(search.scores) == [2, 4, 6, 8]
    assert search.as_dict()["scores"]["4"] == {"recall@10": 0.3}
    # the state returned is the one after exactly 4 epochs (same seed, one thread), not the live one after 8
    reference, _ = _lightfm()
    _fit(reference, matrix)(4)
    for name in ("item_embeddings", "user_embeddings", "item_biases", "user_biases"):
        assert np.array_equal(getattr(best, name), getattr(reference, name)), name
    assert not np.array_equal(best.item_embeddings, model.item_embeddings)


def test_early_stopping_ends_at_max_epochs_while_it_still_improves():
    model, matrix = _lightfm()
    best, search = fit_with_early_stopping(model, _fit(model, matrix), _scripted([0.1, 0.2, 0.3]), "recall@10",
                                           max_epochs=5, every=2, patience=2)
    assert list(search.scores) == [2, 4, 5] and search.best_epoch == 5
    assert np.array_equal(best.item_embeddings, model.item_embeddings)


# ---- the objective, the coverage guard-rail and the claims -----------------------------------------------

def test_coverage_below_the_floor_is_penalised_and_never_chosen_over_a_trial_above_it():
    assert objective_value(0.2, 0.30, 0.15) == 0.2
    assert objective_value(0.2, 0.05, 0.10) == pytest.approx(0.1)
    study = optuna.create_study(direction="maximize")
    for value, coverage in ((0.30, 0.05), (0.18, 0.20), (0.19, 0.25)):  # the first is below the floor
        study.add_trial(optuna.trial.create_trial(value=value, user_attrs={"coverage": coverage,
                                                                           "coverage_floor": 0.1}))
    assert best_trial(study).number == 2


def _completed(study: optuna.Study, value: float, lightfm: float) -> None:
    study.add_trial(optuna.trial.create_trial(value=value, intermediate_values={0: lightfm},
                                              user_attrs={"coverage": 0.3, "coverage_floor": 0.1}))


def test_a_later_trial_is_chosen_only_when_it_beats_the_earlier_ones_by_more_than_the_tie_margin():
    def chosen(*values: float) -> int:
        study = optuna.create_study(direction="maximize")
        for value in values:
            _completed(study, value, 0.1)
        return best_trial(study).number

    assert chosen(0.10, 0.120, 0.121, 0.120 * (1 + TIE_MARGIN / 2)) == 1  # ties with trial 1: the first of them
    assert chosen(0.10, 0.120, 0.121, 0.120 * (1 + 2 * TIE_MARGIN)) == 3  # a clear lead
    assert chosen(0.10, 0.08, 0.09) == 0


def test_the_pruner_cuts_the_bottom_tenth_of_first_stages_and_not_where_the_best_trial_has_a_weak_one():
    def pruned(best_first_stage: float, first_stage: float) -> bool:
        study = new_study(0)
        _completed(study, 0.2, best_first_stage)  # the best two-stage trial
        for i in range(9):
            _completed(study, 0.1, 0.05 + 0.01 * i)
        trial = study.ask()
        trial.report(first_stage, step=0)
        return should_prune(trial)

    assert not pruned(0.10, 0.10)  # in the middle: kept (Optuna's PercentilePruner(10) pruned all but the top tenth)
    assert pruned(0.10, 0.01)      # below every completed one
    assert not pruned(0.01, 0.01)  # the best trial's LightFM is the weakest: LightFM alone does not predict the objective


def test_a_pruned_trial_keeps_no_objective_and_the_search_plot_draws_every_kind_of_trial(tmp_path):
    from recsys.training.report import _plot_tuning, tuning_summary
    from recsys.training.tune import _trial_record

    study = optuna.create_study(direction="maximize")
    attrs = {"ndcg": 0.2, "coverage": 0.3, "coverage_floor": 0.1, "lightfm_ndcg": 0.15, "epochs": 8, "seconds": 3.0}
    study.add_trial(optuna.trial.create_trial(value=0.2, params={"ranker.depth": 6}, user_attrs=attrs,
                                              distributions={"ranker.depth": optuna.distributions.IntDistribution(3, 10)}))
    study.add_trial(optuna.trial.create_trial(value=0.1, params={"ranker.depth": 4},
                                              user_attrs={**attrs, "coverage": 0.05},
                                              distributions={"ranker.depth": optuna.distributions.IntDistribution(3, 10)}))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, params={"ranker.depth": 3},
                                              intermediate_values={0: 0.05}, user_attrs={"seconds": 1.0},
                                              distributions={"ranker.depth": optuna.distributions.IntDistribution(3, 10)}))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    records = [_trial_record(t) for t in study.trials]
    assert records[2]["state"] == "pruned" and records[2]["value"] is None  # Optuna would say 0.05, LightFM's ndcg
    assert records[2]["lightfm_ndcg_at_prune"] == 0.05 and records[3]["value"] is None
    tuning = {"trials": records, "elapsed_s": 9.0, "budget_s": 60.0, "seed": 1, "objective": "o", "best_trial": 0,
              "best_value": 0.2, "best_params": {"ranker.depth": 6}, "importance": {"ranker.depth": 1.0},
              "importance_method": "fANOVA over 2 completed trials"}
    _plot_tuning(tuning, tmp_path / "tuning.png")
    assert (tmp_path / "tuning.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "4 trials (2 complete, 1 pruned, 1 fail)" in tuning_summary(tuning)


def _evaluation(two_stage: float, ease: float) -> dict:
    return {"metrics": {"ease": {"ndcg@10": ease, "map@10": ease}, "two_stage": {"ndcg@10": two_stage,
                                                                                 "map@10": two_stage}}}


@pytest.mark.parametrize(("two_stage", "claimed", "verdict"), [
    ([0.20], False, "1 seed(s), 3 needed"),
    ([0.20, 0.21], False, "2 seed(s), 3 needed"),
    ([0.20, 0.21, 0.205], True, "beats it"),
    ([0.20, 0.14, 0.22], False, "within 2 sd"),
    ([0.14, 0.145, 0.14], False, "does not beat it"),
])
def test_a_claim_needs_three_seeds_and_a_gap_above_its_spread(two_stage, claimed, verdict):
    claims = spread.claims([_evaluation(v, 0.15) for v in two_stage], k=10)
    assert [c["baseline"] for c in claims] == ["ease", "ease"]
    assert all(c["claimed"] is claimed and verdict in c["verdict"] for c in claims), claims
    summary = spread.summarise([_evaluation(v, 0.15) for v in two_stage])
    assert summary["two_stage"]["ndcg@10"]["mean"] == pytest.approx(np.mean(two_stage))
    assert summary["ease"]["ndcg@10"]["sd"] == 0.0


def test_the_anchors_are_whole_trials_inside_the_searched_ranges():
    """Each anchor names searched settings only, with values inside their ranges (a value outside would be clipped
    into another configuration than the one that won elsewhere), and the anchors differ from each other."""
    space = {p.key: p for p in SPACE}
    for anchor in ANCHORS:
        assert set(anchor) <= set(space)
        assert {key: space[key].clip(value) for key, value in anchor.items()} == anchor
    values = anchor_values(Settings())
    assert values[0] == current_values(Settings()) and len({json.dumps(v, sort_keys=True) for v in values}) == len(ANCHORS)


def test_a_parameters_file_is_checked_like_any_setting():
    settings = Settings()
    assert apply_params(settings, {"ranker": {"depth": 4}}).ranker.depth == 4
    for bad, message in (({"serving": {"workers": 2}}, "unknown section 'serving'"),
                         ({"lightfm": {"epoch": 3}}, "unknown setting lightfm.epoch"),
                         ({"ranker": {"depth": 99}}, "ranker.depth")):
        with pytest.raises(SettingsError, match=message):
            apply_params(settings, bad, "f.json")


# ---- `recsys tune` end to end ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """`recsys tune` on tiny data with the anchors and one sampled trial, no training: the parameters file and the
    log."""
    home = tmp_path_factory.mktemp("tune")
    out = home / "params.json"
    command = [str(BIN / "recsys"), "tune", "--size", "tiny", "--trials", str(TRIALS), "--no-train", "--out", str(out)]
    result = subprocess.run(command, env=project_env(home), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return {"home": home, "file": out, "content": json.loads(out.read_text()), "log": result.stderr}


def test_tune_writes_the_parameters_and_the_search_history(tuned):
    content = tuned["content"]
    assert content["format"] == "recsys-params/1"
    assert {f"{section}.{name}" for section, values in content["params"].items() for name in values} == {
        p.key for p in SPACE}
    # the reranker's target discount is searched (on MovieLens-shaped data it moved served NDCG@10 by 6%)
    assert "popularity_debias" in content["params"]["ranker"]
    tuning = content["tuning"]
    # one coverage floor for the search and for the penalty `recsys train` chooses
    assert tuning["coverage_floor"] == Settings().ranker.coverage_floor
    trials = tuning["trials"]
    assert [t["number"] for t in trials] == list(range(TRIALS))
    # trial 0 is the settings as they were, so the search cannot end worse than them on validation; then the anchors
    assert trials[0]["params"] == current_values(Settings())
    assert [t["params"] for t in trials[:len(ANCHORS)]] == anchor_values(Settings())
    assert tuning["best_params"] == trials[tuning["best_trial"]]["params"]
    for trial in trials:
        assert trial["state"] == "complete" and trial["value"] == pytest.approx(
            objective_value(trial["ndcg"], trial["coverage"], trial["coverage_floor"]))
    top = max(t["value"] for t in trials if t["value"] is not None)
    assert tuning["best_trial"] == min(t["number"] for t in trials if (t["value"] or 0) >= top * (1 - TIE_MARGIN))
    # the holdout window is not what the trials were scored on: their validation window ends before it
    windows = tuning["windows"]
    assert windows["trials_split"]["holdout"]["end"] < windows["holdout_untouched"]["start"]
    assert set(tuning["importance"]) <= {p.key for p in SPACE}
    assert f"trial {TRIALS - 1} ({TRIALS}/{TRIALS}) complete" in tuned["log"] and "budget used" in tuned["log"]


def test_the_same_seed_gives_the_same_trials_and_another_seed_others(tuned, tmp_path):
    def trials(seed: int) -> list[dict]:
        settings = Settings(home=tmp_path, data={"dataset": "synthetic", "size": "tiny", "seed": seed})
        return tune(generate("tiny", seed=seed), settings, budget_s=3600, max_trials=TRIALS).tuning["trials"]

    def outcome(records: list[dict]) -> list[tuple]:
        return [(t["params"], t["value"], t["ndcg"], t["coverage"], t["epochs"]) for t in records]

    from_cli = outcome(tuned["content"]["tuning"]["trials"])
    assert outcome(trials(SEED)) == from_cli  # in another process, too
    other = outcome(trials(7))
    # the anchors are the same for any seed; the trial after them is sampled
    assert [o[0] for o in other[:len(ANCHORS)]] == [o[0] for o in from_cli[:len(ANCHORS)]]
    assert other[-1][0] != from_cli[-1][0]


def test_two_trials_at_once_score_what_they_score_one_at_a_time(tuned, tmp_path):
    """A batch of two runs in two threads: whichever finishes first, each trial scores exactly what it scores alone
    (the first trials are the anchors and TPE's random start-up ones, so their parameters do not depend on the
    results before)."""
    settings = Settings(home=tmp_path, data={"dataset": "synthetic", "size": "tiny", "seed": SEED})
    result = tune(generate("tiny", seed=SEED), settings, budget_s=3600, max_trials=TRIALS, jobs=2)
    assert result.tuning["jobs"] == 2
    assert [(t["params"], t["value"], t["ndcg"], t["coverage"], t["epochs"]) for t in result.tuning["trials"]] == [
        (t["params"], t["value"], t["ndcg"], t["coverage"], t["epochs"]) for t in tuned["content"]["tuning"]["trials"]]


def test_train_with_the_parameters_file_puts_them_and_the_search_in_both_models_and_the_report(tuned):
    import yaml

    home = tuned["home"]
    result = train(project_env(home), "--size", "tiny", "--params", str(tuned["file"]), "--seeds", "3")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "training with the parameters of" in result.stderr
    content = tuned["content"]
    models = home / "bentoml" / "models"
    version = (models / "recsys_ranker" / "latest").read_text().strip()
    for name in ("recsys_candidates", "recsys_ranker"):
        meta = yaml.safe_load((models / name / version / "model.yaml").read_text())["metadata"]
        for section, values in content["params"].items():
            assert {k: meta["params"][section][k] for k in values} == values, (name, section)
        assert meta["tuning"]["best_params"] == content["tuning"]["best_params"]
        assert [t.get("value") for t in meta["tuning"]["trials"]] == [t["value"] for t in content["tuning"]["trials"]]
        assert meta["tuning"]["params_file"] == str(tuned["file"])
        assert meta["offline_spread"]["seeds"] == [42, 43, 44]
        epochs = meta["lightfm_epochs"]  # the count found, then B and C each go on from the fit before
        assert epochs["served"] == epochs["early_stopping"]["best_epoch"] + 2 * epochs["warm_epochs"]
    report_dir = home / "var" / "reports" / version
    report = json.loads((report_dir / "report.json").read_text())
    assert report["tuning"]["best_params"] == content["tuning"]["best_params"]
    markdown = (report_dir / "report.md").read_text()
    assert "## Tuning" in markdown and " ± " in markdown and "beat the baselines" in markdown
    for folder in (report_dir, models / "recsys_ranker" / version / "showcase"):
        assert (folder / "tuning.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((models / "recsys_ranker" / version / "showcase" / "summary.json").read_text())
    assert summary["tuning"].startswith("Parameters from `recsys tune`") and len(summary["claims"]) == 6


def test_train_refuses_a_file_that_is_not_a_parameters_file(tmp_path):
    bad = tmp_path / "params.json"
    bad.write_text(json.dumps({"lightfm": {"epochs": 3}}))
    result = train(project_env(tmp_path), "--size", "tiny", "--params", str(bad))
    assert result.returncode == 2 and "not a parameters file written by `recsys tune`" in result.stderr
    assert not (tmp_path / "bentoml" / "models").exists()
