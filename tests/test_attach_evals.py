"""Evals attached to a study's stored runs: evaluated from their final checkpoints, never retrained,
each row carrying the spec it was made with, and nothing evaluated twice."""

import json

from conftest import tiny_run
from meap_scale.cli import main
from meap_scale.data import prepare_data
from meap_scale.eval_spec import EvalSpec
from meap_scale.report.data import latest_spec, load_report_data
from meap_scale.store import ResultsStore
from meap_scale.store.rows import run_row
from meap_scale.store.store import utc_now
from meap_scale.train.loop import train_loop_per_worker

TRAINED_WITH = EvalSpec(tasks=("needle",), per_cell=1, documents=2, doc_tokens=1)


def store_a_study_run(store_path, seed: int, checkpoint: bool = True) -> str:
    """A finished run laid out as a single-worker study run: checkpoints under _checkpoints/<run_id>."""
    spec = tiny_run(seed=seed, evals=TRAINED_WITH)
    prepared = prepare_data(spec.data)
    root = str(store_path / "_checkpoints" / spec.run_id) if checkpoint else None
    out = train_loop_per_worker({"run": spec.to_dict(), "data": prepared.to_dict(), "checkpoint_root": root})
    store = ResultsStore(str(store_path))
    store.append("evals", [{"run_id": spec.run_id, **row} for row in out["evals"]])
    store.append_run(run_row(spec, prepared, final=out["final"], status="finished", started_at=utc_now(),
                             wall_seconds=1.0, study="study", eval_summary=out["eval_summary"]))
    return spec.run_id


def eval_files(store_path) -> set[str]:
    return {p.name for p in (store_path / "evals").glob("*.parquet")}


def test_adding_tasks_to_a_study_evaluates_its_stored_checkpoints_once(tmp_path, capsys):
    store_path = tmp_path / "results"
    run_ids = [store_a_study_run(store_path, seed) for seed in (0, 1)]
    capsys.readouterr()
    argv = ["eval", "--store", str(store_path), "--study", "study", "--tasks", "needle,two_hop,heldout"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "2 run(s) evaluated now, 0 already had these evals, 0 could not be evaluated" in out
    assert all(f"evaluated {run_id} (two_hop, heldout)" in out for run_id in run_ids)  # needle was there already
    rows = ResultsStore(str(store_path)).read("evals").to_pylist()
    for run_id in run_ids:
        mine = [r for r in rows if r["run_id"] == run_id]
        assert {r["task"] for r in mine} == {"needle", "two_hop", "heldout"}
        for row in mine:  # each row names the spec it was made with: the run's own, narrowed to its task
            spec = json.loads(row["eval_spec_json"])
            assert spec["tasks"] == [row["task"]] and spec["per_cell"] == 1 and spec["documents"] == 2
    report = {run["run_id"]: run["evals"] for run in load_report_data(ResultsStore(str(store_path))).runs}
    assert all({"needle_accuracy", "two_hop_accuracy", "heldout_loss"} <= set(report[r]) for r in run_ids)

    written = eval_files(store_path)
    assert main(argv) == 0
    assert "0 run(s) evaluated now, 2 already had these evals" in capsys.readouterr().out
    assert eval_files(store_path) == written
    # A changed spec is a new evaluation: the needle with two items per cell.
    assert main([*argv[:-2], "--tasks", "needle", "--per-cell", "2"]) == 0
    assert "2 run(s) evaluated now" in capsys.readouterr().out
    rows = ResultsStore(str(store_path)).read("evals").to_pylist()
    needle = [json.loads(r["eval_spec_json"])["per_cell"] for r in rows if r["task"] == "needle"]
    assert set(needle) == {1, 2}  # both kept, each under its own spec: nothing of the first is overwritten
    assert needle.count(1) == needle.count(2)
    latest = [json.loads(r["eval_spec_json"])["per_cell"] for r in latest_spec(rows) if r["task"] == "needle"]
    assert set(latest) == {2}  # what the report shows


def test_runs_that_cannot_be_evaluated_are_named_and_bad_input_fails_first(tmp_path, capsys):
    store_path = tmp_path / "results"
    with_checkpoint = store_a_study_run(store_path, 0)
    without = store_a_study_run(store_path, 1, checkpoint=False)
    capsys.readouterr()
    base = ["eval", "--store", str(store_path), "--study", "study"]
    assert main([*base, "--tasks", "two_hop"]) == 1
    captured = capsys.readouterr()
    assert f"evaluated {with_checkpoint}" in captured.out and "1 could not be evaluated" in captured.out
    assert f"not evaluated {without}: no checkpoint of its last step" in captured.err

    written = eval_files(store_path)
    for argv, message in (([*base, "--tasks", "gsm8k"], "evals.tasks ['gsm8k'] unknown"),
                          ([*base, "--tasks", "multidoc", "--documents", "20", "--doc-tokens", "40"], "exceed"),
                          (["eval", "--store", str(store_path), "--study", "nope"], "no finished runs"),
                          (["eval", "--study", "study"], "needs --store")):
        assert main(argv) == 2, argv
        assert message in capsys.readouterr().err, argv
    assert eval_files(store_path) == written  # nothing evaluated, nothing written
