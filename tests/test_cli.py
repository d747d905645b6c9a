import dataclasses
import json
import subprocess
import sys

import pytest

from meap_scale.cli import build_parser, main
from meap_scale.cli.spec_options import SECTIONS, spec_from_args
from meap_scale.store import ResultsStore


def help_text() -> str:
    return build_parser()._subparsers._group_actions[0].choices["train"].format_help()


def test_help_documents_every_option():
    text = help_text()
    for _, cls, skipped, renames in SECTIONS:
        for field in dataclasses.fields(cls):
            if field.name not in skipped:
                flag = "--" + renames.get(field.name, field.name).replace("_", "-")
                assert flag in text, flag
    parser = build_parser()._subparsers._group_actions[0].choices["train"]
    undocumented = [a.option_strings for a in parser._actions if not (a.help or "").split("(default:")[0].strip()]
    assert not undocumented


def test_options_land_in_the_right_spec_fields():
    args = build_parser().parse_args(["train", "--model", "custom", "--n-layers", "3", "--d-model", "96",
                                      "--n-heads", "6", "--n-kv-heads", "2", "--ffn-dim", "256",
                                      "--objective", "ntp", "--tokens", "2e6", "--betas", "0.8", "0.9",
                                      "--gpu", "--data", "bundled:kjv", "--seq-len", "128", "--workers", "2"])
    spec = spec_from_args(args)
    assert spec.model.shape.n_kv_heads == 2 and spec.objective.name == "ntp"
    assert spec.tokens == 2_000_000 and spec.optim.betas == (0.8, 0.9)
    assert spec.use_gpu and spec.data.seq_len == 128 and spec.workers == 2


def test_eval_options_set_the_runs_eval_suite():
    args = build_parser().parse_args(["train", "--eval-tasks", "needle", "multidoc", "--eval-depths", "0", "0.5",
                                      "--eval-seed", "3", "--seed", "1", "--eval-context-lens", "128"])
    spec = spec_from_args(args)
    assert spec.evals.tasks == ("needle", "multidoc") and spec.evals.depths == (0.0, 0.5)
    assert spec.evals.seed == 3 and spec.seed == 1 and spec.evals.context_lens == (128,)


def test_counts_are_whole_numbers_written_as_people_write_them():
    for text, value in (("65536", 65_536), ("2e6", 2_000_000), ("2M", 2_000_000), ("1.5e9", 1_500_000_000),
                        ("10B", 10_000_000_000), ("512k", 512_000), ("16_384", 16_384)):
        assert spec_from_args(build_parser().parse_args(["train", "--tokens", text])).tokens == value
    for bad in ("2.5", "1.5k5", "lots", ""):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["train", "--tokens", bad])


PROBE = ("import sys, ray; from meap_scale.cli import main\n"
         "try:\n    rc = main(sys.argv[1:])\nexcept SystemExit as done:\n    rc = done.code\n"
         "print('RAY-STARTED' if ray.is_initialized() else 'RAY-NOT-STARTED'); sys.exit(rc)")


@pytest.mark.parametrize("argv, message", [
    (["--mask-ratio", "1.5"], "objective.mask_ratio must be in [0, 1), got 1.5"),
    (["--tokens", "0"], "run.tokens must be positive"),
    (["--model", "huge"], "argument --model: invalid choice: 'huge' (choose from 'debug', 'xs'"),
    (["--data", "EMPTY"], "0 non-empty document(s)"),
    (["--tokenizer", "./no/such/tokenizer"], "tokenizer path './no/such/tokenizer' does not exist"),
    (["--schedule", "wsd", "--warmup-steps", "0", "--tokens", "81920", "--decay-at", "40960"], "--decay-at needs --store"),
    (["--schedule", "wsd", "--tokens", "81920", "--decay-at", "40960"], "needs optim.warmup_steps (--warmup-steps)"),
])
def test_bad_input_fails_with_a_clear_message_before_ray_starts(tmp_path, argv, message):
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"text": ""}\n')
    argv = [str(empty) if a == "EMPTY" else a for a in argv]
    done = subprocess.run([sys.executable, "-c", PROBE, "train", *argv], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert message in done.stderr
    assert "RAY-NOT-STARTED" in done.stdout


@pytest.mark.slow
def test_train_with_decay_at_pauses_on_ray_train_branches_from_the_checkpoint_and_stores_both(ray_cluster, tmp_path,
                                                                                              capsys):
    """Two workers: the pause, the branch's start from its parent's Ray Train checkpoint and the parent's
    resumption by name all go through TorchTrainer; the summary the command prints and the run's row, curve and
    evals that --store writes, as a study writes them."""
    argv = ["train", "--workers", "2", "--cpus-per-worker", "0.5", "--tokens", "10240", "--decay-at", "5120",
            "--schedule", "wsd", "--warmup-steps", "1", "--seq-len", "64", "--batch-tokens", "512",
            "--micro-batch-size", "4", "--log-every", "2", "--storage-path", str(tmp_path / "runs"), "--json",
            "--store", str(tmp_path / "results"), "--eval-tasks", "heldout", "needle", "--eval-depths", "0", "1",
            "--eval-per-cell", "1"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 20 and summary["tokens"] == 10240
    assert [b["tokens"] for b in summary["branches"]] == [5120]
    assert summary["val_loss"] > 0 and summary["heldout_loss"] > 0
    store = ResultsStore(str(tmp_path / "results"))
    assert ResultsStore(summary["store"]).root == store.root
    rows = {r["run_id"]: r for r in store.runs().to_pylist()}
    assert {r["status"] for r in rows.values()} == {"finished"}
    assert rows[summary["run_id"]]["val_loss"] == summary["val_loss"]
    (branch,) = [r for r in rows.values() if r["parent_run_id"]]
    assert branch["parent_run_id"] == summary["run_id"] and branch["tokens_seen"] == 5120
    lr = {p["step"]: p["value"] for p in store.curves(branch["run_id"]).to_pylist() if p["metric"] == "lr"}
    assert lr[8] == pytest.approx(4e-4) and lr[10] == pytest.approx(4e-5)  # started at step 8 (10 - 2 cooldown)
    parent = {p["step"] for p in store.curves(summary["run_id"]).to_pylist()}
    assert parent == set(range(2, 21, 2))  # paused at 8, then on to its end as one curve
    evals = [e for e in store.read("evals").to_pylist() if e["run_id"] == summary["run_id"]]
    needle, = [e for e in evals if (e["task"], e["condition"], e["metric"]) == ("needle", "all", "accuracy")]
    assert summary["needle_accuracy"] == needle["value"] and needle["n"] == 2  # 2 depths x 1 item per cell
    assert {e["task"] for e in evals} == {"heldout", "needle"}
    assert main(argv) == 0  # again: the branch is found in the store, the parent resumes at its end
    assert "branches" not in json.loads(capsys.readouterr().out)


def stored_run(tmp_path):
    store = ResultsStore(str(tmp_path))
    store.append_run({"run_id": "run-a", "status": "finished", "study": "s", "objective": "meap", "mask_ratio": 0.15,
                      "val_loss": 4.25, "config_json": '{"seed": 0}'})
    store.append_run({"run_id": "run-b", "status": "failed", "study": "s", "error": "Traceback: boom"})
    store.append_curve("run-a", [{"step": 1, "tokens": 8, "train_loss": 5.0}, {"step": 2, "tokens": 16,
                                                                             "train_loss": 4.5}])
    return str(tmp_path)


def test_store_ls_lists_runs_and_filters_by_status(tmp_path, capsys):
    path = stored_run(tmp_path)
    assert main(["store", "ls", "--store", path]) == 0
    out = capsys.readouterr().out
    assert "run-a" in out and "run-b" in out and "2 run(s)" in out
    header = out.splitlines()[0].split()
    assert "lr" in header and "seq_len" not in header  # the runs do not differ in it
    ResultsStore(path).append_run({"run_id": "run-c", "status": "stopped", "study": "s", "seq_len": 128})
    ResultsStore(path).append_run({"run_id": "run-d", "status": "finished", "study": "s", "seq_len": 256})
    assert main(["store", "ls", "--storage", path, "--status", "stopped"]) == 0  # the old flag, one more release
    captured = capsys.readouterr()
    assert "--storage is deprecated" in captured.err and "use --store" in captured.err and "run-c" in captured.out
    assert main(["store", "ls", "--store", path]) == 0
    assert "seq_len" in capsys.readouterr().out.splitlines()[0].split()
    assert main(["store", "ls", "--store", path, "--status", "failed"]) == 0
    out = capsys.readouterr().out
    assert "run-b" in out and "run-a" not in out


def test_store_show_prints_every_column_the_curve_and_the_config(tmp_path, capsys):
    path = stored_run(tmp_path)
    assert main(["store", "show", "run-a", "--store", path]) == 0
    out = capsys.readouterr().out
    assert "val_loss" in out and "4.25" in out and "curve: 2 report(s)" in out and '"seed": 0' in out
    assert main(["store", "show", "missing", "--store", path]) == 2
    assert "no run 'missing'" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_store_export_writes_a_readable_file(tmp_path, capsys, fmt):
    import pandas as pd

    path = stored_run(tmp_path / "store")
    out = tmp_path / f"runs.{fmt}"
    assert main(["store", "export", "--store", path, "--format", fmt, "--out", str(out)]) == 0
    frame = {"csv": pd.read_csv, "parquet": pd.read_parquet, "jsonl": lambda p: pd.read_json(p, lines=True)}[fmt](out)
    assert sorted(frame["run_id"]) == ["run-a", "run-b"]
