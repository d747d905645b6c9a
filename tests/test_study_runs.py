"""Studies end to end on a real local Ray: the smoke study script, re-runs, and an interrupted driver."""

import json
import os
import runpy
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import s3fs

from conftest import joining_env
from meap_scale.checkpoints import UPLOADED
from meap_scale.store import ResultsStore

pytestmark = pytest.mark.slow
STUDIES = Path(__file__).resolve().parents[1] / "studies"


def run_script(name: str, *argv: str) -> int:
    """Run a study script in this process (it joins the session's Ray), as `python studies/NAME.py ARGV`."""
    saved = sys.argv
    sys.argv = [str(STUDIES / f"{name}.py"), *argv]
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as done:
        return done.code
    finally:
        sys.argv = saved
    raise AssertionError("a study script must exit with a status")


def run_files(store: Path) -> set[str]:
    return {p.name for p in (store / "runs").glob("part-*.parquet")}


def test_smoke_study_fills_the_store_with_its_evals_and_a_rerun_trains_nothing(ray_cluster, tmp_path, monkeypatch,
                                                                               capsys):
    """The smoke study on a copy of the bundled corpus, started with a relative store (Tune runs each trial in a
    directory of its own: relative paths are anchored on the driver); then reruns, other names, options and the
    corpus moved to another path, attached evals and a fit on its store."""
    import shutil

    from meap_scale.data.sources import bundled_path
    from meap_scale.eval_spec import EVAL_TASKS

    monkeypatch.chdir(tmp_path)
    store_path = tmp_path / "results"
    corpus, moved = tmp_path / "corpus" / "kjv.jsonl.xz", tmp_path / "moved" / "kjv.jsonl.xz"
    for path in (corpus, moved):
        path.parent.mkdir()
        shutil.copy(bundled_path("kjv"), path)
    data = ["--data", str(corpus)]
    assert run_script("mask_ratio_sweep", "--preset", "smoke", "--store", "results", *data) == 0
    store = ResultsStore(str(store_path))
    runs = store.runs({"study": "mask-ratio-smoke"}).to_pylist()
    assert sorted((r["objective"], r["mask_ratio"]) for r in runs) == [("meap", 0.15), ("ntp", 0.0)]
    evals = store.read("evals").to_pylist()
    for run in runs:
        assert run["status"] == "finished" and run["tokens_seen"] == 65_536 and run["val_loss"] > 0
        curve = store.curves(run["run_id"]).to_pylist()
        assert {p["step"] for p in curve if p["metric"] == "val_loss"} == {16, 32, 48, 64}
        assert {p["step"] for p in curve} >= {6, 12, 18, 60}  # checkpoint reports: an interrupt loses < 10%
        assert {p["metric"] for p in curve} >= {"train_loss", "val_loss", "lr", "tokens_per_s"}
        assert {r["task"] for r in evals if r["run_id"] == run["run_id"]} == set(EVAL_TASKS)
        assert {"heldout_loss", "needle_accuracy", "needle_control_accuracy", "multidoc_accuracy",
                "attention_needle_share"} <= set(json.loads(run["eval_summary_json"]))
    printed = capsys.readouterr().out
    assert "2 finished runs in the store, 2 trained now" in printed and f"results store: {store_path}" in printed
    assert f"report: {store_path / 'report-mask-ratio-smoke.html'}" in printed
    page = (store_path / "report-mask-ratio-smoke.html").read_text()
    assert "CPU-scale runs only: a plumbing demo" in page and 'id="fig-needle_heatmap"' in page
    written = run_files(store_path)

    assert run_script("mask_ratio_sweep", "--preset", "smoke", "--store", str(store_path), *data) == 0
    assert "0 trained now" in capsys.readouterr().out
    # The name is a contract: other options under it are refused, before Ray, with what changed.
    assert run_script("mask_ratio_sweep", "--preset", "smoke", "--store", str(store_path), *data,
                      "--tokens", "32768") == 2
    error = capsys.readouterr().err
    assert "run.tokens: 65536 -> 32768" in error and "--resume" in error
    assert run_script("mask_ratio_sweep", "--preset", "smoke", "--store", str(store_path), *data, "--tokens", "32768",
                      "--resume") == 0
    assert "0 trained now" in capsys.readouterr().out  # the stored options: nothing new to train
    # Under another name, on the corpus moved to another path (other run ids: the id does not read the corpus),
    # Tune starts afresh, and the store alone prevents retraining: it finds each training by its corpus content.
    assert run_script("mask_ratio_sweep", "--preset", "smoke", "--store", str(store_path), "--name", "again",
                      "--data", str(moved)) == 0
    printed = capsys.readouterr().out
    assert "0 trained now" in printed and "study again: 2 finished runs in the store" in printed
    assert run_files(store_path) == written
    # Both studies see the shared runs: in the store, and in each one's report.
    ids = {r["run_id"] for r in runs}
    assert {r["run_id"] for r in store.runs({"study": "again"}).to_pylist()} == ids
    for name in ("mask-ratio-smoke", "again"):
        page = (store_path / f"report-{name}.html").read_text()
        assert all(run_id in page for run_id in ids), name

    # Evals attached afterwards read the study's own final checkpoints: nothing is trained again.
    from meap_scale.cli import main

    argv = ["eval", "--store", str(store_path), "--study", "mask-ratio-smoke", "--tasks", "needle", "--per-cell", "2"]
    assert main(argv) == 0
    assert "2 run(s) evaluated now, 0 already had these evals, 0 could not be evaluated" in capsys.readouterr().out
    assert run_files(store_path) == written

    # A fit over this study's store says plainly that one run per objective cannot determine a law.
    assert main(["fit", "--store", str(store_path), "--bootstrap", "0"]) == 1
    assert capsys.readouterr().out.count("cannot fit: 1 point(s) cannot determine 5 parameters") == 2


def test_a_multi_budget_study_stores_each_branch_with_its_parent_and_a_rerun_trains_nothing(ray_cluster, tmp_path,
                                                                                            capsys):
    store_path = tmp_path / "results"
    argv = ["--preset", "smoke", "--store", str(store_path), "--multi-budget"]
    assert run_script("scaling_grid", *argv) == 0
    assert "4 trained now" in capsys.readouterr().out
    runs = {r["run_id"]: r for r in ResultsStore(str(store_path)).runs().to_pylist()}
    branch_rows = [r for r in runs.values() if r["parent_run_id"]]
    assert len(runs) == 4 and len(branch_rows) == 2 and all(r["status"] == "finished" for r in runs.values())
    for branch in branch_rows:
        parent = runs[branch["parent_run_id"]]
        assert (parent["tokens_seen"], branch["tokens_seen"]) == (65_536, 32_768)
        assert (branch["objective"], branch["mask_ratio"]) == (parent["objective"], parent["mask_ratio"])
        assert branch["flops_palm"] == pytest.approx(parent["flops_palm"] / 2)  # its whole budget, as a run's
        curve = ResultsStore(str(store_path)).curves(branch["run_id"]).to_pylist()
        lr = {p["step"]: p["value"] for p in curve if p["metric"] == "lr"}
        assert lr[16] == pytest.approx(3e-3) and lr[32] == pytest.approx(3e-4)  # the parent's peak, its own cooldown
    written = run_files(store_path)
    assert run_script("scaling_grid", *argv) == 0
    assert "0 trained now" in capsys.readouterr().out and run_files(store_path) == written


def latest_checkpoint(store: str, prefix: str) -> int:
    """The highest step whose checkpoint upload finished, of a run whose id starts with ``prefix``, on the S3 store
    ``store`` (0 before its first)."""
    fs = s3fs.S3FileSystem()
    fs.invalidate_cache()
    uploaded = fs.glob(f"{store[len('s3://'):]}/_checkpoints/{prefix}*/step-*/{UPLOADED}")
    return max((int(path.split("/")[-2][5:]) for path in uploaded), default=0)


def wait_for(condition, driver: subprocess.Popen, deadline: float) -> None:
    while not condition():
        assert time.monotonic() < deadline and driver.poll() is None, "the study must still be running"
        time.sleep(0.2)


def test_a_study_on_an_object_store_stopped_twice_resumes_from_another_machine_and_never_retrains_a_finished_run(
        ray_cluster, s3_bucket, tmp_path, capsys):
    """One study on S3, stopped twice mid-run: SIGTERM (the driver records the run in flight and says how to
    resume), then SIGKILL of the resumed driver (no chance to clean up); the same command then finishes the study.
    The second and third drivers run from another working folder with another home, as on another machine: Tune's
    state and the run's checkpoints are on S3 with the store, and the MEAP run resumes from its last upload."""
    store = f"{s3_bucket}/results"
    argv = [str(STUDIES / "mask_ratio_sweep.py"), "--preset", "smoke", "--store", store,
            "--max-concurrent", "1", "--tokens", "131072"]  # 128 steps: seconds of margin after the first report
    env = {**joining_env(ray_cluster), "RAY_AUTH_TOKEN_PATH": str(Path.home() / ".ray" / "auth_token")}
    first, second = tmp_path / "first", tmp_path / "second"
    for folder in (first, second / "home"):
        folder.mkdir(parents=True)
    elsewhere = {**env, "HOME": str(second / "home")}
    driver = subprocess.Popen([sys.executable, *argv], cwd=first, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    # The MEAP run (the second trial) has checkpointed at step 24 of 128, after its first report (step 16).
    wait_for(lambda: latest_checkpoint(store, "meap") >= 24, driver, time.monotonic() + 300)
    driver.send_signal(signal.SIGTERM)
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == 143, err[-3000:]
    assert "SIGTERM: study mask-ratio-smoke interrupted" in err and f"python {argv[0]}" in err
    assert "1 interrupted" in out and "no report" not in out  # one run finished: its report is written
    runs = {r["status"]: r for r in ResultsStore(store).runs().to_pylist()}
    assert set(runs) == {"finished", "interrupted"}
    finished, stopped = runs["finished"], runs["interrupted"]
    assert 0 < stopped["tokens_seen"] < stopped["tokens_budget"] and "interrupted with the study" in stopped["error"]
    reached, saved = stopped["tokens_seen"] // stopped["batch_tokens"], latest_checkpoint(store, "meap")
    assert saved > reached - 128 // 10  # it resumes less than a tenth back
    assert s3fs.S3FileSystem().glob(f"{store[5:]}/_tune/mask-ratio-smoke/experiment_state*.json")  # Tune's state

    # The same command, elsewhere, resumes the MEAP run; once it has uploaded a later checkpoint, its driver dies.
    driver = subprocess.Popen([sys.executable, *argv], cwd=second, env=elsewhere, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    wait_for(lambda: latest_checkpoint(store, "meap") > saved, driver, time.monotonic() + 300)
    resumed_at = latest_checkpoint(store, "meap")
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()

    done = subprocess.run([sys.executable, *argv], cwd=second, env=elsewhere, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = {r["run_id"]: r for r in ResultsStore(store).runs().to_pylist()}
    assert [r["status"] for r in runs.values()] == ["finished", "finished"]
    assert runs[finished["run_id"]]["written_at"] == finished["written_at"]  # not trained again
    assert runs[stopped["run_id"]]["resumed_from_step"] >= resumed_at  # from its upload, not from scratch
    assert runs[finished["run_id"]]["resumed_from_step"] is None
    # Evals attached later read the final checkpoints from S3 (only complete uploads count).
    from meap_scale.cli import main

    assert main(["eval", "--store", store, "--study", "mask-ratio-smoke", "--tasks", "needle", "--per-cell", "2"]) == 0
    assert "2 run(s) evaluated now, 0 already had these evals, 0 could not be evaluated" in capsys.readouterr().out


def test_bad_study_input_fails_before_any_trial_starts(tmp_path):
    for argv, message in ((["--preset", "huge"], "invalid choice: 'huge'"),
                          (["--preset", "smoke", "--tokens", "-5"], "argument --tokens: '-5' is below 1"),
                          (["--preset", "smoke", "--store", "gs://bucket/study"], "gcsfs")):
        done = subprocess.run([sys.executable, str(STUDIES / "mask_ratio_sweep.py"), *argv], capture_output=True,
                              text=True, timeout=300, cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        assert message in done.stderr
        assert "Started a local Ray instance" not in done.stderr + done.stdout
        assert not (tmp_path / "results").exists()


def test_optuna_search_with_asha_and_a_baseline_point(ray_cluster, tmp_path):
    from meap_scale.study.presets import build_study
    from meap_scale.study.runner import run_study
    from meap_scale.study.space import loguniform
    from meap_scale.study.spec import StudySpec

    smoke = build_study("mask_ratio_sweep", "smoke", storage=str(tmp_path / "results"))
    spec = StudySpec(name="optuna", base=smoke.base, search="optuna", num_samples=3, asha=True,
                     space={"optim.lr": loguniform(1e-3, 1e-2)}, points_to_evaluate=({"optim.lr": 3e-3},),
                     storage=smoke.storage)
    outcome = run_study(spec)
    runs = ResultsStore(spec.storage).runs({"study": "optuna"}).to_pylist()
    assert len(outcome.trial_configs) == 3 and outcome.failed == 0
    assert len(runs) == 3 and outcome.total == 3 - outcome.ended["stopped"] >= 1  # every trial's run is a row
    assert outcome.trial_configs[0] == {"optim.lr": 3e-3}  # the baseline point runs first
    assert all(1e-3 <= c["optim.lr"] <= 1e-2 for c in outcome.trial_configs)


def test_trials_asha_stops_leave_rows_with_their_status_and_last_metrics(ray_cluster, tmp_path):
    from dataclasses import replace

    from meap_scale.scaling.groups import group_runs
    from meap_scale.study.presets import build_study
    from meap_scale.study.runner import _scheduler, run_study
    from meap_scale.study.space import grid
    from meap_scale.study.spec import StudySpec

    smoke = build_study("mask_ratio_sweep", "smoke", storage=str(tmp_path / "results"))
    # One at a time, the good learning rate first: at the first rung the second trial trails it and stops.
    learning_rates = grid({"optim.lr": 3e-3, "optim.min_lr": 3e-4}, {"optim.lr": 1e-5, "optim.min_lr": 1e-6})
    spec = StudySpec(name="asha", base=smoke.base, asha=True, space={"point": learning_rates}, max_concurrent=1,
                     storage=smoke.storage)
    run_tokens = spec.base.steps * spec.base.optim.batch_tokens
    for seeds in ((0,), (0, 1, 2)):  # the scheduler's time is one run's tokens, however many seeds
        assert _scheduler(replace(spec, seeds=seeds))._max_t == run_tokens + 1
    outcome = run_study(spec)
    assert dict(outcome.ended) == {"finished": 1, "stopped": 1} and outcome.not_finished == 1
    runs = {r["lr"]: r for r in ResultsStore(spec.storage).runs({"study": "asha"}).to_pylist()}
    stopped = runs[1e-5]
    assert stopped["status"] == "stopped" and "ASHA" in stopped["error"] and stopped["trial_id"]
    assert 0 < stopped["tokens_seen"] < stopped["tokens_budget"] == run_tokens
    assert stopped["val_loss"] > runs[3e-3]["val_loss"] > 0 and stopped["train_loss"] > 0
    assert [(b["lr"], b["seeds"]) for b in outcome.best.best] == [(3e-3, 1)]
    (group,) = group_runs(list(runs.values()))
    assert group.excluded == {"status stopped": 1} and len(group.runs) == 1


def test_failed_runs_are_stored_with_their_error(ray_cluster, tmp_path):
    from dataclasses import replace

    from meap_scale.data import prepare_data
    from meap_scale.study.presets import build_study
    from meap_scale.study.runner import run_study

    spec = build_study("mask_ratio_sweep", "smoke", storage=str(tmp_path / "results"))
    data = replace(spec.base.data, cache_dir=str(tmp_path / "cache"))
    spec = replace(spec, base=replace(spec.base, data=data))
    prepared = prepare_data(data)
    Path(prepared.shard_paths("train")[0]).write_bytes(b"damaged after preparation")  # a real, broken cache
    outcome = run_study(spec)
    runs = ResultsStore(spec.storage).runs().to_pylist()
    assert outcome.failed == 2 and outcome.total == 0
    assert all(r["status"] == "failed" and "Traceback" in r["error"] for r in runs)
    assert all(r["hardware"] == "1x cpu (not reported: the run ended before its first report)" for r in runs)


def test_multi_objective_search_uses_nsga2_over_loss_and_throughput(ray_cluster, tmp_path):
    from meap_scale.study.presets import build_study
    from meap_scale.study.runner import run_study
    from meap_scale.study.space import choice
    from meap_scale.study.spec import StudySpec

    smoke = build_study("mask_ratio_sweep", "smoke", storage=str(tmp_path / "results"))
    spec = StudySpec(name="pareto", base=smoke.base, search="optuna", num_samples=2,
                     metrics=("val_loss", "tokens_per_s"), space={"objective.mask_ratio": choice(0.0, 0.15, 0.3)},
                     storage=smoke.storage)
    outcome = run_study(spec)
    assert len(outcome.trial_configs) == 2 and outcome.failed == 0 and outcome.total >= 1
    runs = ResultsStore(spec.storage).runs({"study": "pareto"}).to_pylist()
    assert all(r["tokens_per_s"] > 0 and r["val_loss"] > 0 for r in runs)


def test_a_file_url_store_is_anchored_as_its_folder_and_remote_urls_stay_as_they_are(tmp_path, monkeypatch):
    from meap_scale.study.presets import build_study
    from meap_scale.study.spec import anchored

    monkeypatch.chdir(tmp_path)
    for store, expected in ((f"file://{tmp_path}/shared", f"{tmp_path}/shared"), ("results", f"{tmp_path}/results"),
                            ("s3://bucket/study", "s3://bucket/study")):
        spec = anchored(build_study("mask_ratio_sweep", "smoke", storage=store))
        assert spec.storage == expected and spec.base.storage_path == f"{expected}/_runs"


def test_a_one_worker_trial_whose_process_dies_is_started_again_and_resumes_its_run(ray_cluster, tmp_path):
    """The trial's own process exits hard at step 40 (after the step-36 checkpoint); with max_failures 1 Tune starts
    it again, and the run resumes from that checkpoint under the store instead of failing the study."""
    from dataclasses import replace

    from meap_scale.eval_spec import EvalSpec
    from meap_scale.study.presets import build_study
    from meap_scale.study.runner import run_study
    from meap_scale.study.space import choice
    from meap_scale.study.spec import StudySpec

    smoke = build_study("mask_ratio_sweep", "smoke", storage=str(tmp_path / "results"))
    base = replace(smoke.base, fail_at_step=40, max_failures=1, evals=EvalSpec(tasks=()))
    spec = StudySpec(name="retried", base=base, space={"objective.mask_ratio": choice(0.15)}, storage=smoke.storage)
    outcome = run_study(spec)
    assert outcome.trained == 1 and outcome.failed == 0
    run = ResultsStore(spec.storage).runs({"study": "retried"}).to_pylist()[0]
    assert run["status"] == "finished" and run["tokens_seen"] == 65_536
    steps = {p["step"] for p in ResultsStore(spec.storage).curves(run["run_id"]).to_pylist()}
    assert steps >= {36, 42, 64}
