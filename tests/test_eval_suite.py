"""The eval suite a run names: every task's rows, checked before training, run after it."""

import time

import pytest

from conftest import tiny_run
from meap_scale.eval_spec import ANSWER_ROOM, EVAL_TASKS, EvalSpec
from meap_scale.evals.items import TaskError
from meap_scale.evals.suite import check_suite, run_suite
from meap_scale.models import LADDER, build_model
from meap_scale.spec_base import ConfigError
from meap_scale.train.loop import train_loop_per_worker


def test_the_default_retrieval_suite_scores_a_random_debug_model_at_chance(prepared):
    model = build_model(LADDER["debug"], prepared.model_vocab_size, 256, seed=0)
    started = time.perf_counter()
    rows, summary = run_suite(model, prepared, EvalSpec(tasks=EVAL_TASKS), seq_len=256)
    print(f"default suite on the debug model: {time.perf_counter() - started:.1f} s")  # issue 5: under a minute
    assert {r["task"] for r in rows} == set(EVAL_TASKS)
    assert set(summary) == {"heldout_loss", "needle_accuracy", "needle_control_accuracy", "multidoc_accuracy",
                            "two_hop_accuracy", "attention_entropy", "attention_needle_share",
                            "attention_value_share", "attention_masked_attention_change",
                            "attention_unmasked_variance_change"}
    heads = [r for r in rows if r["task"] == "attention" and r["metric"] == "entropy" and r["condition"] != "all"]
    assert len(heads) == LADDER["debug"].n_layers * LADDER["debug"].n_heads
    assert 0 < summary["attention_value_share"] < summary["attention_needle_share"] < 1  # the value is in the needle
    for task in ("needle", "needle_control", "multidoc", "two_hop"):
        overall = {r["metric"]: r for r in rows if r["task"] == task and r["condition"] == "all"}
        assert overall["accuracy"]["value"] < overall["chance"]["value"] + 3 * max(overall["accuracy"]["stderr"], 0.05)
        assert {"exact_match", "mean_rank"} <= set(overall)
    conditions = {r["condition"] for r in rows if r["task"] == "needle" and r["condition"] != "all"}
    depths = {f"position={d:g}" for d in EvalSpec().depths}
    assert conditions == depths | {f"length={n},{d}" for n in (128, 248) for d in depths}  # the depth x length grid


def test_a_suite_that_cannot_fit_the_model_fails_before_training(prepared):
    with pytest.raises(TaskError, match="exceed the model's maximum of 64"):
        check_suite(prepared, EvalSpec(tasks=("multidoc",), documents=8, doc_tokens=12), seq_len=64)
    with pytest.raises(TaskError, match="cannot hold 2 needles"):
        check_suite(prepared, EvalSpec(tasks=("two_hop",), context_lens=(32,)), seq_len=64)
    with pytest.raises(ConfigError, match="evals.context_lens"):
        tiny_run(evals=EvalSpec(tasks=("needle",), context_lens=(128,)))
    with pytest.raises(ConfigError, match="evals.tasks"):
        EvalSpec(tasks=("gsm8k",))


def test_a_run_with_evals_returns_their_rows():
    from meap_scale.data import prepare_data

    spec = tiny_run(evals=EvalSpec(tasks=EVAL_TASKS, context_lens=(56,), depths=(0.0, 1.0), per_cell=1, documents=2,
                                   doc_tokens=1))
    out = train_loop_per_worker({"run": spec.to_dict(), "data": prepare_data(spec.data).to_dict()})
    assert {r["task"] for r in out["evals"]} == set(EVAL_TASKS)
    assert out["eval_summary"]["heldout_loss"] > 0


def test_eval_command_evaluates_a_saved_checkpoint(tmp_path, capsys):
    import json

    from meap_scale.cli import main
    from meap_scale.data import prepare_data
    from meap_scale.store import ResultsStore

    spec = tiny_run(checkpoint_every=4)
    train_loop_per_worker({"run": spec.to_dict(), "data": prepare_data(spec.data).to_dict(),
                           "checkpoint_root": str(tmp_path / "ckpt")})
    capsys.readouterr()
    checkpoint = tmp_path / "ckpt" / "step-00000004"
    assert main(["eval", "--checkpoint", str(checkpoint), "--per-cell", "1", "--documents", "2", "--doc-tokens", "1",
                 "--store", str(tmp_path / "store")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = ResultsStore(str(tmp_path / "store")).read("evals").to_pylist()
    assert {r["task"] for r in rows} == {"needle", "needle_control", "multidoc", "two_hop"}
    # the printed summary is the stored whole-task row, a count of right answers out of its items
    needle, = [r for r in rows if (r["task"], r["condition"], r["metric"]) == ("needle", "all", "accuracy")]
    assert summary["run_id"] == spec.run_id and summary["needle_accuracy"] == needle["value"]
    assert needle["n"] > 0 and needle["value"] * needle["n"] == pytest.approx(round(needle["value"] * needle["n"]))
    assert main(["eval", "--checkpoint", str(tmp_path)]) == 2
    assert "not a meap-scale checkpoint folder" in capsys.readouterr().err


def test_a_checkpoint_is_evaluated_from_the_corpus_its_run_prepared_even_where_the_raw_corpus_is_gone(tmp_path,
                                                                                                      capsys):
    """The checkpoint's data.json names the prepared blocks and tokenizer: evaluation reads them and never the raw
    corpus (for a real one, hours of preparation). Without data.json (checkpoints written before it) the corpus is
    prepared again, and says so; here the corpus is gone, so that fails with its reason."""
    import os
    import shutil

    from meap_scale.checkpoints import DATA_FILE
    from meap_scale.cli import main
    from meap_scale.config import DataSpec
    from meap_scale.data import prepare_data
    from meap_scale.data.sources import bundled_path

    corpus = tmp_path / "corpus" / "kjv.jsonl.xz"
    corpus.parent.mkdir()
    shutil.copy(bundled_path("kjv"), corpus)
    spec = tiny_run(checkpoint_every=4, data=DataSpec(source=str(corpus), seq_len=64, cache_dir=str(tmp_path / "c")))
    train_loop_per_worker({"run": spec.to_dict(), "data": prepare_data(spec.data).to_dict(),
                           "checkpoint_root": str(tmp_path / "ckpt")})
    checkpoint = tmp_path / "ckpt" / "step-00000004"
    os.remove(corpus)
    capsys.readouterr()
    argv = ["eval", "--checkpoint", str(checkpoint), "--tasks", "needle,heldout", "--per-cell", "1"]
    assert main(argv) == 0
    out = capsys.readouterr()
    assert out.err == "" and '"heldout_loss"' in out.out
    os.remove(checkpoint / DATA_FILE)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"cannot point to its corpus (it has no {DATA_FILE}): preparing {corpus} again" in err
    assert str(corpus) in err.split("error:")[-1]


def test_a_lost_in_the_middle_file_replaces_the_synthetic_documents(prepared, qa_file):
    model = build_model(LADDER["debug"], prepared.model_vocab_size, 256, seed=0)
    spec = EvalSpec(tasks=("multidoc",), qa_file=str(qa_file), documents=6, candidates=4)
    rows, summary = run_suite(model, prepared, spec, seq_len=256)
    accuracy = {r["condition"]: r for r in rows if r["metric"] == "accuracy"}
    assert set(accuracy) == {"all"} | {f"position={p:g}" for p in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)}
    assert accuracy["all"]["n"] == 6 and summary["multidoc_accuracy"] == accuracy["all"]["value"]
    assert accuracy["all"]["value"] * 6 == pytest.approx(round(accuracy["all"]["value"] * 6))  # k of 6 questions
    assert {r["value"] for r in rows if r["metric"] == "chance"} == {0.25}
    with pytest.raises(TaskError, match="does not exist"):
        check_suite(prepared, EvalSpec(tasks=("multidoc",), qa_file="no/such/file.jsonl"), seq_len=256)


@pytest.mark.parametrize("study", ["mask_ratio_sweep", "scaling_grid", "isoflop"])
def test_the_paper_presets_eval_items_fit_their_context_with_room_for_the_answer(study):
    """The paper preset's needle, two-hop and multidoc items, built for real (its 32,000-token BPE trained on the
    bundled corpus standing in for fineweb-edu, its 4096-token context): they once asked for 4096-token contexts,
    which left no room for the answer and were refused only after the whole corpus had been prepared."""
    from dataclasses import replace

    from meap_scale.data import prepare_data
    from meap_scale.study.presets import build_study

    base = build_study(study, "paper").base
    assert max(base.evals.context_lens) == base.data.seq_len - ANSWER_ROOM
    prepared = prepare_data(replace(base.data, source="bundled:kjv"))  # the session's cache: prepared once
    check_suite(prepared, base.evals, base.data.seq_len)


def test_a_context_that_leaves_no_room_for_the_answer_is_refused_by_the_config():
    with pytest.raises(ConfigError, match=f"at most {64 - ANSWER_ROOM}"):
        tiny_run(evals=EvalSpec(tasks=("needle",), context_lens=(64,)))
    assert tiny_run(evals=EvalSpec(tasks=("needle",), context_lens=(64 - ANSWER_ROOM,))).evals.context_lens == (56,)
