"""lm-evaluation-harness driving our checkpoints: a local task scored by the harness, cross-checked by hand;
benchmarks whose data is not on this machine skipped with their reason."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import tiny_run
from meap_scale.evals.harness import HarnessError, run_harness
from meap_scale.models import LADDER, build_model

TASK_DIR = Path(__file__).parent / "data" / "harness"


@pytest.fixture(scope="module")
def include(tmp_path_factory) -> str:
    """The local task with its data file's absolute path filled in."""
    folder = tmp_path_factory.mktemp("harness")
    data = shutil.copy(TASK_DIR / "scripture_mc.jsonl", folder)
    (folder / "scripture_mc.yaml").write_text((TASK_DIR / "scripture_mc.yaml").read_text().replace("DATA_FILE", data))
    return str(folder)


@pytest.fixture(scope="module")
def tokenizer(prepared):
    return prepared.load_tokenizer()


def _choice_by_hand(model, tokenizer, question: str, choices: list[str]) -> int:
    """The harness's multiple-choice rule written out: BOS, the prompt, then each choice after a space;
    the highest summed log-probability of the choice's tokens wins."""
    context = f"Question: {question}\nAnswer:"
    context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    scores = []
    for choice in choices:
        whole = tokenizer(f"{context} {choice}", add_special_tokens=False)["input_ids"]
        ids = torch.tensor([[tokenizer.bos_token_id, *whole]])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
        positions = range(len(context_ids), len(whole))  # position p (after BOS) predicts token p + 1
        scores.append(sum(float(logprobs[p, whole[p]]) for p in positions))
    return max(range(len(choices)), key=scores.__getitem__)


def test_a_local_task_is_scored_by_the_harness_as_by_hand(prepared, tokenizer, include):
    model = build_model(LADDER["debug"], prepared.model_vocab_size, 64, seed=1).eval()
    result = run_harness(model, tokenizer, ("scripture_mc",), max_length=64, include=include)
    assert result.skipped == {}
    rows = {r["metric"]: r for r in result.rows}
    assert set(rows) == {"acc", "acc_norm"} and {r["task"] for r in result.rows} == {"harness:scripture_mc"}
    assert rows["acc"]["n"] == 8 and rows["acc"]["stderr"] > 0
    items = [json.loads(line) for line in (TASK_DIR / "scripture_mc.jsonl").read_text().splitlines()]
    by_hand = sum(_choice_by_hand(model, tokenizer, i["question"], i["choices"]) == i["label"] for i in items) / 8
    assert rows["acc"]["value"] == pytest.approx(by_hand)


def test_benchmarks_without_local_data_are_skipped_with_their_reason(prepared, tokenizer, include):
    model = build_model(LADDER["debug"], prepared.model_vocab_size, 64, seed=1).eval()
    result = run_harness(model, tokenizer, ("arc_easy", "scripture_mc"), max_length=64, include=include, limit=4)
    assert list(result.skipped) == ["arc_easy"] and "not available here" in result.skipped["arc_easy"]
    assert {r["task"] for r in result.rows} == {"harness:scripture_mc"} and result.rows[0]["n"] == 4
    with pytest.raises(HarnessError, match=r"no task\(s\) \['arc_easz'\]"):
        run_harness(model, tokenizer, ("arc_easz",), max_length=64, include=include)


def test_eval_command_runs_the_harness_on_a_checkpoint_and_says_what_it_skipped(tmp_path, capsys, include):
    from meap_scale.cli import main
    from meap_scale.data import prepare_data
    from meap_scale.store import ResultsStore
    from meap_scale.train.loop import train_loop_per_worker

    spec = tiny_run(checkpoint_every=4)
    train_loop_per_worker({"run": spec.to_dict(), "data": prepare_data(spec.data).to_dict(),
                           "checkpoint_root": str(tmp_path / "ckpt")})
    checkpoint, store = str(tmp_path / "ckpt" / "step-00000004"), str(tmp_path / "store")
    capsys.readouterr()
    assert main(["eval", "--checkpoint", checkpoint, "--suite", "harness", "--harness-tasks", "piqa,scripture_mc",
                 "--harness-include", include, "--store", store]) == 0
    out = capsys.readouterr()
    assert "skipped piqa: its data is not available here" in out.err and "harness:scripture_mc" in out.out
    assert {(r["run_id"], r["task"]) for r in ResultsStore(store).read("evals").to_pylist()} == \
           {(spec.run_id, "harness:scripture_mc")}
    assert main(["eval", "--checkpoint", checkpoint, "--suite", "harness", "--harness-tasks", "piqa",
                 "--harness-include", include]) == 1
    assert "no harness task could run" in capsys.readouterr().err
