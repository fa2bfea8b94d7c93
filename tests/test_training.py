"""The real training pipeline on the tiny synthetic dataset, against a temporary BentoML model store.

`train` runs once per module (about 10 s). BentoML reads BENTOML_HOME lazily, but resolves it only once per
process (its DI container memoises the home and the model store), so besides setting the variable the fixture
points the container's model store at the temporary folder for the module's duration and restores both
afterwards: whatever ran earlier in the session, nothing is written to the real ~/bentoml.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.core.candidates import (
    CANDIDATE_FEATURES,
    EASE_FIELDS,
    LABEL_FIELDS,
    PROFILE_FIELDS,
    SOURCES,
    CandidateModel,
    Mix,
)
from recsys.data.synthetic import generate
from recsys.features.store import OnlineFeatureTable
from recsys.settings import Settings

RUN_SIZE = "tiny"
DEFAULT_SEED = 42


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    bento_home = tmp_path_factory.mktemp("bentoml_home")
    recsys_home = tmp_path_factory.mktemp("recsys_home")
    saved_env = {k: os.environ.get(k) for k in ("BENTOML_HOME", "BENTOML_DO_NOT_TRACK")}
    os.environ["BENTOML_HOME"] = str(bento_home)
    os.environ["BENTOML_DO_NOT_TRACK"] = "True"
    try:
        from bentoml._internal.configuration.containers import BentoMLContainer
        from bentoml._internal.models.model import ModelStore

        (bento_home / "models").mkdir(exist_ok=True)
        with contextlib.ExitStack() as stack:
            stack.enter_context(BentoMLContainer.bentoml_home.patch(str(bento_home)))
            stack.enter_context(BentoMLContainer.model_store_dir.patch(str(bento_home / "models")))
            stack.enter_context(BentoMLContainer.model_store.patch(ModelStore(bento_home / "models")))
            from recsys.training.pipeline import train

            settings = Settings(home=recsys_home,
                                data={"dataset": "synthetic", "size": RUN_SIZE, "seed": DEFAULT_SEED}).single_threaded()
            result = train(settings)
            yield {"result": result, "settings": settings, "bento_home": bento_home, "recsys_home": recsys_home}
    finally:
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def pair(trained):
    import bentoml

    version = trained["result"].run_id
    return bentoml.models.get(f"recsys_candidates:{version}"), bentoml.models.get(f"recsys_ranker:{version}")


# ---- the model store --------------------------------------------------------------------------------------

def test_models_land_in_the_temporary_store(trained):
    import bentoml

    from recsys.core import model_store

    run_id = trained["result"].run_id
    models = trained["bento_home"] / "models"
    for name in ("recsys_candidates", "recsys_ranker"):
        assert (models / name / run_id / "model.yaml").is_file()
        assert (models / name / "latest").read_text().strip() == run_id
    assert sorted(str(m.tag) for m in bentoml.models.list()) == sorted(trained["result"].tags)
    assert model_store.store_home() == str(trained["bento_home"])


def test_pair_tags_labels_and_metadata(trained, pair):
    result = trained["result"]
    run_id = result.run_id
    assert result.tags == (f"recsys_candidates:{run_id}", f"recsys_ranker:{run_id}")
    candidates, ranker = pair
    assert candidates.tag.version == ranker.tag.version == run_id
    fingerprint = generate(RUN_SIZE, seed=DEFAULT_SEED).fingerprint()
    assert run_id.endswith("-" + fingerprint[:6])
    for model, stage in ((candidates, "candidates"), (ranker, "ranker")):
        labels = model.info.labels
        assert labels["run_id"] == run_id and labels["dataset"] == "synthetic" and labels["stage"] == stage

    meta = ranker.info.metadata
    assert candidates.info.metadata == meta
    assert meta["run_id"] == run_id
    assert meta["dataset"] == "synthetic"
    assert meta["dataset_fingerprint"] == fingerprint
    assert meta["dataset_summary"]["interactions"] == len(generate(RUN_SIZE, seed=DEFAULT_SEED).interactions)
    manifest = json.loads((Path(ranker.path_of("features")) / "manifest.json").read_text())
    assert meta["feature_store_version"] == manifest["version"]
    assert manifest["source_fingerprint"] == fingerprint
    assert isinstance(meta["ranker_features"], list) and len(meta["ranker_features"]) > len(CANDIDATE_FEATURES)
    assert meta["ranker_features"][: len(CANDIDATE_FEATURES)] == CANDIDATE_FEATURES
    assert meta["params"]["lightfm"]["epochs"] == trained["settings"].lightfm.epochs
    assert meta["params"]["ranker"]["loss"] == trained["settings"].ranker.loss
    assert set(meta["params"]) == {"lightfm", "candidates", "ranker"}
    assert set(meta["offline_metrics"]) == {"popular", "lightfm", "ease", "two_stage"}
    for values in meta["offline_metrics"].values():
        assert set(values) == {"map@10", "ndcg@10", "recall@10", "hitrate@10", "coverage@10"}
        assert all(0.0 <= v <= 1.0 for v in values.values())
    assert set(meta["candidate_recall"]) == {"lightfm", "popular", "cooc", "ease", "combined"}
    assert meta["candidate_recall"]["combined"] >= max(meta["candidate_recall"][s] for s in SOURCES)
    # the tiny catalogue is below candidates.ease_max_items: the served model has EASE, with the baseline's weight,
    # and serves the mix its reranker was trained on
    assert meta["ease"]["in_candidate_model"] is True and meta["ease"]["l2"] > 0
    assert meta["candidate_recall"]["ease"] > 0
    # the tiny catalogue is below the index threshold: LightFM's top-n scores every item
    assert meta["item_index"] == {"kind": "exact", "items": 300, "ann_min_items": 50_000}
    # ... so every known user's LightFM and EASE lists are stored, for the mix it serves
    mix = meta["params"]["candidates"]
    assert meta["stored_lists"] == {"users": meta["stored_lists"]["users"], "n_lightfm": mix["n_lightfm"],
                                    "n_ease": mix["n_ease"]} and meta["stored_lists"]["users"] > 0
    assert {"catboost", "bentoml", "rectools-lightfm", "numpy"} <= set(meta["libraries"])
    import bentoml
    import catboost

    assert meta["libraries"]["catboost"] == catboost.__version__
    assert meta["libraries"]["bentoml"] == bentoml.__version__
    # the run's duration covers every step before the save (rounded to 0.1 s); how long it is depends on the machine
    timings = trained["result"].report["timings"]
    before_save = sum(seconds for step, seconds in timings.items() if not step.startswith("save"))
    assert meta["training_seconds"] >= before_save - 0.1
    assert meta["split"]["strategy"] == "global"


def test_model_files_are_pickle_free_and_load(trained, pair):
    from recsys.core import model_store

    candidates, ranker = pair
    for model in pair:
        files = [p for p in Path(model.path_of("/")).rglob("*") if p.is_file()]
        assert files
        assert not [p for p in files if p.suffix in {".pkl", ".pickle", ".joblib", ".cloudpickle"}], files
    cand_dir = Path(candidates.path_of("candidates"))
    assert sorted(p.name for p in cand_dir.iterdir()) == sorted(f"{name}.npy" for name in CandidateModel.array_fields())
    ranker_dir = Path(ranker.path_of("/"))
    assert (ranker_dir / "ranker.cbm").is_file() and (ranker_dir / "item_ids.npy").is_file()
    online = [f"{table}.{array}.npy" for table in ("items", "users") for array in OnlineFeatureTable.ARRAYS]
    assert sorted(p.name for p in (ranker_dir / "features").iterdir()) == sorted(
        ["items.parquet", "manifest.json", "online.json", "users.parquet", *online])
    assert sorted(p.name for p in (ranker_dir / "showcase").iterdir()) == [
        "history.arrow", "importance.png", "items.arrow", "metrics.png", "summary.json", "users.arrow"]
    # every .npy loads without pickle
    for path in list(cand_dir.glob("*.npy")) + [ranker_dir / "item_ids.npy"]:
        np.load(path, allow_pickle=False)

    model = model_store.load_candidates(candidates)
    bundle = model_store.load_ranker(ranker)
    model_store.check_pair(candidates, ranker)
    meta = ranker.info.metadata
    assert list(bundle.reranker.model.feature_names_) == meta["ranker_features"]
    assert bundle.reranker.assembler.feature_names == meta["ranker_features"]
    assert bundle.features.manifest["version"] == meta["feature_store_version"]
    assert np.array_equal(np.load(ranker_dir / "item_ids.npy"), model.item_ids)
    # the served candidate model was refit on all interactions (stage C)
    dataset = generate(RUN_SIZE, seed=DEFAULT_SEED)
    assert np.array_equal(model.user_ids, np.unique(dataset.interactions["user_id"]))
    assert len(model.seen_indices) == len(dataset.interactions)
    # with EASE's weights for the whole catalogue and the mix the reranker was trained on
    assert model.ease_weights.shape == (len(model.item_ids),) * 2 and model.ease_weights.dtype == np.float32
    assert model.served_mix(Mix(1, 1, 1, 1)) == Mix(*trained["settings"].candidates.mix)
    # and the loaded pair scores candidates end to end
    rows = np.arange(5)
    batch = model.generate(rows, Mix(20, 5, 5))
    scores = bundle.reranker.score(model.user_ids[rows], batch)
    assert len(scores) == len(batch) > 0 and np.isfinite(scores).all()
    assert model_store.resolve_version() == trained["result"].run_id


def test_candidates_model_saved_before_users_profiles_were_kept_still_loads(pair, tmp_path):
    """Its users without history then get global popularity, as they did when it was trained."""
    saved = Path(pair[0].path_of("candidates"))
    (tmp_path / "old").mkdir()
    for path in saved.iterdir():
        if path.stem not in (*PROFILE_FIELDS, *LABEL_FIELDS.values()):
            (tmp_path / "old" / path.name).write_bytes(path.read_bytes())
    current, old = CandidateModel.load(saved), CandidateModel.load(tmp_path / "old")
    idle = current.profile_user_ids[:3]
    assert len(idle) == 3 and None not in current.profiles(idle) and old.profiles(idle) == [None] * 3
    # `user_features` labels: the users table's; for the old model, those its segments use
    users = generate(RUN_SIZE, seed=DEFAULT_SEED).users
    labels = CandidateModel.demographic_labels(saved)
    assert labels == {"age": {*users["age"], "unknown"}, "sex": {*users["sex"], "unknown"}}
    assert set(CandidateModel.demographic_labels(tmp_path / "old")["age"]) <= labels["age"]


def test_candidates_model_saved_before_ease_and_its_mix_were_kept_still_loads(pair, tmp_path):
    """Without EASE it proposes nothing from EASE and scores it 0; without a stored mix it generates the settings'."""
    saved = Path(pair[0].path_of("candidates"))
    (tmp_path / "old").mkdir()
    for path in saved.iterdir():
        if path.stem not in EASE_FIELDS:
            (tmp_path / "old" / path.name).write_bytes(path.read_bytes())
    old = CandidateModel.load(tmp_path / "old")
    assert not old.has_ease and old.served_mix(Mix(9, 8, 7, 6)) == Mix(9, 8, 7, 6)
    batch = old.generate(np.arange(3), Mix(20, 5, 5, 10))
    assert not batch.from_source("ease").any() and not batch.column("ease_score").any()
    assert CandidateModel.load(saved).generate(np.arange(3), Mix(20, 5, 5, 10)).from_source("ease").any()


def test_report_files_and_metrics(trained):
    result = trained["result"]
    report_dir = result.report_dir
    assert report_dir == trained["recsys_home"] / "reports" / result.run_id
    for name in ("report.json", "report.md", "report.html", "metrics.png", "importance.png"):
        assert (report_dir / name).is_file() and (report_dir / name).stat().st_size > 0, name
        assert (report_dir.parent / "latest" / name).is_file(), name
    assert (report_dir / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((report_dir / "report.json").read_text())
    assert report["run_id"] == result.run_id and report["tags"] == list(result.tags)
    assert result.run_id in (report_dir / "report.md").read_text()
    # the run's feature-store snapshot lives only in its ranker: a shared var/features/<dataset> let concurrent
    # runs swap snapshots (issue 12, item 4)
    assert not (trained["recsys_home"] / "features").exists()

    metrics = report["evaluation"]["metrics"]
    assert metrics == report["offline_metrics"]
    assert report["evaluation"]["users"] > 100
    # which model wins is tests/test_quality.py's business: on tiny data the gaps are within run-to-run noise


# ---- no leakage of the holdout window into stage A -------------------------------------------------------

def _stage_a(dataset, split, settings):
    """Stage A exactly as `train` runs it: first level + features on history, reranker on the label window."""
    from recsys.training.pipeline import _assembler, _fit_first_stage
    from recsys.training.second_stage import fit_ranker

    stage = _fit_first_stage(dataset, split.history, split.label_as_of, settings, settings.data.seed,
                             validation=split.labels)
    tables, model = stage.tables, stage.model
    fit = fit_ranker(model, _assembler(tables, model), split.labels, settings.candidates, settings.ranker,
                     seed=settings.data.seed)
    return tables, model, fit


def _tamper(inter: pd.DataFrame, start: pd.Timestamp, item_ids: np.ndarray, seed: int) -> pd.DataFrame:
    """Rewrite every interaction at or after ``start``: random items, random durations, extra rows."""
    rng = np.random.default_rng(seed)
    inter = inter.copy()
    late = inter["last_watch_dt"] >= start
    inter.loc[late, "item_id"] = rng.choice(item_ids, int(late.sum()))
    inter.loc[late, "watched_pct"] = rng.uniform(0, 100, int(late.sum())).astype(np.float32)
    inter.loc[late, "total_dur"] = rng.uniform(0, 10_000, int(late.sum())).round()
    extra = inter[late].sample(n=min(200, int(late.sum())), random_state=seed).assign(
        user_id=lambda f: f["user_id"] + 10_000_000)  # brand-new users inside the window
    return pd.concat([inter, extra], ignore_index=True)


def test_stage_a_never_sees_the_holdout_window(tiny):
    from dataclasses import replace

    from recsys.training.split import split_interactions

    base = Settings(data={"seed": 7})
    settings = base.model_copy(update={
        "lightfm": base.lightfm.model_copy(update={"threads": 1, "epochs": 10, "no_components": 16}),
        "ranker": base.ranker.model_copy(update={"iterations": 120, "early_stopping_rounds": 30}),
    })
    split = split_interactions(tiny.interactions, settings.split, "synthetic")
    tampered = replace(tiny, interactions=_tamper(tiny.interactions, split.holdout_as_of,
                                                  tiny.items["item_id"].to_numpy(), seed=1))
    split_t = split_interactions(tampered.interactions, settings.split, "synthetic")
    assert not split_t.holdout.reset_index(drop=True).equals(split.holdout.reset_index(drop=True))
    assert (split_t.label_as_of, split_t.holdout_as_of) == (split.label_as_of, split.holdout_as_of)
    pd.testing.assert_frame_equal(split_t.history, split.history)
    pd.testing.assert_frame_equal(split_t.labels, split.labels)
    # what reaches stage A ends before the holdout window
    assert split.history["last_watch_dt"].max() < split.label_as_of
    assert split.labels["last_watch_dt"].max() < split.holdout_as_of

    tables, model, fit = _stage_a(tiny, split, settings)
    tables_t, model_t, fit_t = _stage_a(tampered, split_t, settings)

    # the first level saw exactly the history window
    assert len(model.seen_indices) == len(split.history)
    assert np.array_equal(model.user_ids, np.unique(split.history["user_id"]))
    # identical candidate model, array by array (LightFM single-threaded, same seed)
    for name in CandidateModel.array_fields():
        assert np.array_equal(getattr(model, name), getattr(model_t, name)), name
    pd.testing.assert_frame_equal(tables.users, tables_t.users)
    pd.testing.assert_frame_equal(tables.items, tables_t.items)
    # identical reranker
    assert fit_t.best_iteration == fit.best_iteration == fit.model.get_best_iteration()
    assert fit_t.model.tree_count_ == fit.model.tree_count_
    assert (fit_t.train_rows, fit_t.train_users, fit_t.valid_users) == (fit.train_rows, fit.train_users,
                                                                        fit.valid_users)
    probe = _probe(model, tables, split, settings)
    assert np.array_equal(fit.model.predict(probe), fit_t.model.predict(probe))

    # control: the same comparison does notice a change to the label window, so it is not vacuous
    from recsys.training.pipeline import _assembler
    from recsys.training.second_stage import fit_ranker

    labels_changed = split.labels.assign(item_id=np.random.default_rng(2).permutation(split.labels["item_id"].values))
    fit_c = fit_ranker(model, _assembler(tables, model), labels_changed, settings.candidates, settings.ranker,
                       seed=settings.data.seed)
    assert not np.array_equal(fit.model.predict(probe), fit_c.model.predict(probe))


def _probe(model, tables, split, settings):
    """A fixed input for the rerankers: stage A candidates and features of 50 label users."""
    from recsys.training.pipeline import _assembler
    from recsys.training.second_stage import generate_candidates

    users = np.unique(split.labels["user_id"])
    users = users[model.user_rows(users)[1]][:50]
    batch = generate_candidates(model, users, settings.candidates)
    from catboost import Pool

    return Pool(_assembler(tables, model).assemble(users, batch))


# ---- an interrupted save --------------------------------------------------------------------------------

def test_interrupted_save_keeps_latest_on_the_previous_complete_pair(trained, pair, monkeypatch, tmp_path):
    import bentoml
    from bentoml.exceptions import NotFound

    from recsys.core import model_store

    previous = model_store.resolve_version()
    assert previous == trained["result"].run_id
    candidates, ranker = pair
    cand_model = model_store.load_candidates(candidates)
    ranker_file = tmp_path / "ranker.cbm"
    ranker_file.write_bytes(Path(ranker.path_of("ranker.cbm")).read_bytes())
    feature_dir = Path(ranker.path_of("features"))
    showcase_dir = Path(ranker.path_of("showcase"))
    failed = "interrupted-" + previous
    metadata = {**ranker.info.metadata, "run_id": failed}
    labels = {"run_id": failed, "dataset": "synthetic", "project": "recsys"}

    # fail half-way through the ranker's block: ranker.cbm and item_ids.npy are written, then the feature
    # store copy dies after writing half of its first Parquet file
    real_write_bytes = Path.write_bytes
    written = []

    def dying_write_bytes(self, data):
        if self.suffix == ".parquet":
            real_write_bytes(self, data[: len(data) // 2])
            raise OSError(28, "No space left on device")
        written.append(self.name)
        return real_write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", dying_write_bytes)
    with pytest.raises(OSError, match="No space left"):
        model_store.save_pair(failed, cand_model, ranker_file, feature_dir, showcase_dir, labels, metadata)
    monkeypatch.undo()
    assert "ranker.cbm" in written  # the failure really happened inside the ranker's block

    assert bentoml.models.get("recsys_ranker:latest").tag.version == previous
    with pytest.raises(NotFound):
        bentoml.models.get(f"recsys_ranker:{failed}")
    assert not (trained["bento_home"] / "models" / "recsys_ranker" / failed).exists()
    assert failed not in {m.tag.version for m in bentoml.models.list("recsys_ranker")}
    # serving still resolves and loads the previous complete pair
    assert model_store.resolve_version() == previous
    cand_ok = model_store.get_model(model_store.CANDIDATES, previous)
    rank_ok = model_store.get_model(model_store.RANKER, previous)
    model_store.check_pair(cand_ok, rank_ok)
    model_store.load_ranker(rank_ok)
    # the candidates half of the failed run is removed again, so candidates' `latest` is the previous run too
    assert failed not in {m.tag.version for m in bentoml.models.list("recsys_candidates")}
    assert bentoml.models.get("recsys_candidates:latest").tag.version == previous

    # a complete save afterwards moves latest to the new pair
    done = "complete-" + previous
    tags = model_store.save_pair(done, cand_model, ranker_file, feature_dir, showcase_dir,
                                 {**labels, "run_id": done}, {**metadata, "run_id": done})
    assert tags == (f"recsys_candidates:{done}", f"recsys_ranker:{done}")
    assert model_store.resolve_version() == done
    model_store.check_pair(model_store.get_model(model_store.CANDIDATES, done),
                           model_store.get_model(model_store.RANKER, done))
    with pytest.raises(model_store.ModelStoreError, match="run_id"):
        model_store.check_pair(cand_ok, model_store.get_model(model_store.RANKER, done))
    # saving a version that exists is refused before anything is written, and what exists is kept
    with pytest.raises(model_store.ModelStoreError, match="already exists"):
        model_store.save_pair(done, cand_model, ranker_file, feature_dir, showcase_dir, labels, metadata)
    model_store.check_files(model_store.get_model(model_store.CANDIDATES, done),
                            model_store.get_model(model_store.RANKER, done))


def test_a_pair_that_would_not_be_served_is_removed_before_latest_moves(pair):
    """A ranker whose feature-store snapshot is not the one its metadata names (what concurrent runs sharing
    var/features produced, issue 12 item 4) fails the serving checks at save time: one-line error, nothing of
    the run left in the store, `latest` of both models unchanged."""
    import bentoml

    from recsys.core import model_store

    candidates, ranker = pair
    previous = model_store.resolve_version()
    bad = "mismatched-" + candidates.tag.version
    metadata = {**ranker.info.metadata, "run_id": bad, "feature_store_version": "0123456789abcdef"}
    labels = {"run_id": bad, "dataset": "synthetic", "project": "recsys"}
    with pytest.raises(model_store.ModelStoreError, match="would not be served, so it was removed: .* is version"):
        model_store.save_pair(bad, model_store.load_candidates(candidates), Path(ranker.path_of("ranker.cbm")),
                              Path(ranker.path_of("features")), Path(ranker.path_of("showcase")), labels, metadata)
    for name in (model_store.CANDIDATES, model_store.RANKER):
        assert bad not in {m.tag.version for m in bentoml.models.list(name)}
        assert bentoml.models.get(f"{name}:latest").tag.version == previous


# ---- a production retrain without evaluation --------------------------------------------------------------

def test_no_eval_trains_a_servable_pair_without_the_evaluation_fit(trained):
    """`recsys train --no-eval`: stage A (from the cache the module's run left) and the serving fit on from it,
    no evaluation fit B and no offline metrics; the saved models say they were not evaluated, and they serve."""
    from recsys.core import model_store
    from recsys.training.pipeline import train

    settings = trained["settings"]
    result = train(settings, evaluate_holdout=False)
    steps = list(result.report["timings"])
    assert not [s for s in steps if s.startswith("B.")] and any(s.startswith("C.") for s in steps)
    assert set(result.report["evaluation"]) == {"skipped"}
    candidates = model_store.get_model(model_store.CANDIDATES, result.run_id)
    ranker = model_store.get_model(model_store.RANKER, result.run_id)
    meta = ranker.info.metadata
    assert meta["evaluated"] is False and trained["result"].report["evaluated"] is True
    assert not {"offline_metrics", "offline_spread", "candidate_recall"} & set(meta)
    epochs = meta["lightfm_epochs"]  # the serving fit went on from A: one warm step, not two
    assert epochs["served"] == epochs["early_stopping"]["best_epoch"] + settings.lightfm.warm_epochs
    model_store.check_pair(candidates, ranker)
    model_store.load_ranker(ranker)
    assert "Skipped: trained with `recsys train --no-eval`" in (result.report_dir / "report.md").read_text()
    assert not (result.report_dir / "metrics.png").exists()
    summary = json.loads((Path(ranker.path_of("showcase")) / "summary.json").read_text())
    assert summary["evaluation"] == result.report["evaluation"] and summary["metrics"]["rows"] == []

    with pytest.raises(ValueError, match="one"):
        train(settings, seeds=2, evaluate_holdout=False)
