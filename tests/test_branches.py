"""Multi-budget runs: WSD runs with decay branches, from the config to the plan (no Ray; the study with
branches on Ray is in tests/test_study_runs.py)."""

import dataclasses
import json

import pytest

from conftest import tiny_run
from meap_scale.branch_plan import branch_start, branches, cost_tokens, family_tokens
from meap_scale.checkpoints import latest_checkpoint
from meap_scale.cli import main as cli
from meap_scale.config import ObjectiveSpec, OptimSpec, RunSpec
from meap_scale.scaling.groups import law_key
from meap_scale.spec_base import ConfigError
from meap_scale.study.presets import build_study, multi_budget
from meap_scale.train.branches import BranchError, train_family
from meap_scale.train.loop import train_loop_per_worker

WSD = OptimSpec(batch_tokens=512, micro_batch_size=4, lr=3e-3, min_lr=3e-4, schedule="wsd", cooldown_fraction=0.2,
                warmup_steps=5)


def test_decay_at_needs_wsd_a_constant_mask_ratio_and_branch_points_after_the_warmup():
    with pytest.raises(ConfigError, match="needs optim.schedule 'wsd'"):
        tiny_run(tokens=512 * 100, decay_at=(512 * 50,))
    with pytest.raises(ConfigError, match="mask_schedule 'constant'"):
        tiny_run(tokens=512 * 100, optim=WSD, decay_at=(512 * 50,),
                 objective=ObjectiveSpec(name="meap", mask_schedule="linear_decay"))
    with pytest.raises(ConfigError, match=r"needs optim.warmup_steps \(--warmup-steps\).* --warmup-steps 5 "):
        tiny_run(tokens=512 * 100, optim=dataclasses.replace(WSD, warmup_steps=None), decay_at=(512 * 50,))
    with pytest.raises(ConfigError, match=r"inside the 51200-token run's 10-step warmup; use optim.warmup_steps "
                                          r"4 or less"):
        tiny_run(tokens=512 * 100, optim=dataclasses.replace(WSD, warmup_steps=10), decay_at=(512 * 5, 512 * 50))
    with pytest.raises(ConfigError, match="warmup_steps=9 leaves no room in a 10-step run: at most 8 before its"):
        tiny_run(tokens=512 * 10, optim=dataclasses.replace(WSD, warmup_steps=9))
    with pytest.raises(ConfigError, match="less than run.tokens"):
        tiny_run(tokens=512 * 100, optim=WSD, decay_at=(512 * 100,))
    with pytest.raises(ConfigError, match="names a budget twice"):
        tiny_run(tokens=512 * 100, optim=WSD, decay_at=(512 * 50, 512 * 50 + 1))
    with pytest.raises(ConfigError, match="stop_at_step"):
        tiny_run(tokens=512 * 100, stop_at_step=101)


def test_a_branch_names_its_parent_and_costs_its_cooldown_while_the_parent_keeps_its_id():
    main = tiny_run(tokens=512 * 100, optim=WSD, decay_at=(512 * 60, 512 * 50))
    plain = tiny_run(tokens=512 * 100, optim=WSD)
    assert main.run_id == plain.run_id == dataclasses.replace(main, stop_at_step=40).run_id
    fifty, sixty = branches(main)
    assert (fifty.tokens, sixty.tokens) == (512 * 50, 512 * 60) and fifty.branch_of == main.run_id
    assert (branch_start(fifty), branch_start(sixty)) == (40, 48)
    standalone = tiny_run(tokens=512 * 50, optim=WSD)
    assert fifty.run_id != standalone.run_id and fifty.identity()["branch_of"] == main.run_id
    assert "branch_of" not in standalone.identity()
    assert law_key({"config_json": fifty.to_json()}) == law_key({"config_json": standalone.to_json()})
    assert cost_tokens(fifty) == 512 * 10 and cost_tokens(standalone) == 512 * 50
    assert family_tokens(main) == (512 * (100 + 10 + 12), 512 * (100 + 50 + 60))


def _in_process(prepared, root, spec: RunSpec, start_from=None) -> dict:
    """What a one-worker study trial does: resume the run's own checkpoint, else start from ``start_from``."""
    own = str(root / spec.run_id)
    config = {"run": spec.to_dict(), "data": prepared.to_dict(), "checkpoint_root": own,
              "resume_from": latest_checkpoint(own) or start_from}
    return {**train_loop_per_worker(config), "checkpoint": latest_checkpoint(own)}


@pytest.fixture(scope="module")
def prepared_small():
    from meap_scale.data import prepare_data

    return prepare_data(tiny_run().data)


def test_a_paused_run_continues_exactly_and_its_branch_trains_as_a_standalone_run_of_its_budget(prepared_small,
                                                                                                tmp_path):
    """The main run pauses at the branch's start (step 40 of 100), the branch cools down from there to 50
    steps, the main run goes on. Pausing changes nothing: the same curve as one uninterrupted run. With the
    warmup in steps the branch *is* a standalone 50-step WSD run of the same settings: the same rates and
    losses at every step, the same validation loss. The standalone run with the warmup a 10% fraction gave the
    100-step parent (10 steps, not 5), as branches had before, lands measurably elsewhere (0.06 nats measured),
    so the comparison sees a warmup the two do not share."""
    main = tiny_run(tokens=512 * 100, optim=WSD, decay_at=(512 * 50,), checkpoints=4)
    trained: dict[str, dict] = {}

    def pause_at(paused):
        out = _in_process(prepared_small, tmp_path, paused)
        return out["final"]["step"], out["checkpoint"]

    def train_branch(branch, checkpoint):
        trained[branch.run_id] = _in_process(prepared_small, tmp_path, branch, checkpoint)

    final = train_family(main, finished=lambda spec: spec.run_id in trained, pause_at=pause_at,
                         train_branch=train_branch, train_main=lambda spec: _in_process(prepared_small, tmp_path, spec))
    whole = _in_process(prepared_small, tmp_path / "whole", dataclasses.replace(main, decay_at=()))
    assert [m["train_loss"] for m in final["curve"]] == pytest.approx([m["train_loss"] for m in whole["curve"]],
                                                                       abs=1e-6)
    assert final["data_digest"] == whole["data_digest"]
    (branch,) = trained.values()
    assert branch["resumed_from_step"] == 40 and branch["final"]["step"] == 50
    assert all(m["lr"] == pytest.approx(3e-3) for m in branch["curve"][10:40])  # the long run's history, at peak
    assert branch["final"]["lr"] == pytest.approx(3e-4)
    standalone = _in_process(prepared_small, tmp_path, tiny_run(tokens=512 * 50, optim=WSD))
    for metric in ("lr", "train_loss"):
        assert [m[metric] for m in branch["curve"]] == pytest.approx([m[metric] for m in standalone["curve"]],
                                                                     abs=1e-6)
    assert branch["final"]["val_loss"] == pytest.approx(standalone["final"]["val_loss"], abs=1e-6)
    longer_warmup = _in_process(prepared_small, tmp_path, tiny_run(tokens=512 * 50, optim=dataclasses.replace(
        WSD, warmup_steps=10)))
    assert abs(longer_warmup["final"]["val_loss"] - branch["final"]["val_loss"]) > 1e-3
    with pytest.raises(BranchError, match="finished without it"):  # its start checkpoint is gone
        train_family(main, finished=lambda spec: spec.run_id == main.run_id, pause_at=pause_at,
                     train_branch=train_branch, train_main=lambda spec: None)
    with pytest.raises(BranchError, match="is at step 100, not at the branch's start 40"):
        train_family(main, finished=lambda spec: False, pause_at=lambda spec: (100, "step-00000100"),
                     train_branch=train_branch, train_main=lambda spec: None)
    with pytest.raises(BranchError, match="kept no checkpoint at step 40"):
        train_family(main, finished=lambda spec: False, pause_at=lambda spec: (40, None),
                     train_branch=train_branch, train_main=lambda spec: None)


def _points(study) -> set[tuple]:
    """(size, tokens, mask ratio) of every run a study stores, branches included."""
    from meap_scale.study.spec import study_runs

    return {(spec.model.size, spec.tokens_trained, spec.objective.mask_ratio) for _, spec in study_runs(study)}


@pytest.mark.parametrize("name", ["scaling_grid", "isoflop"])
def test_a_multi_budget_study_stores_every_point_of_the_study_it_replaces(name):
    separate = build_study(name, "laptop", schedule="wsd")
    branched = build_study(name, "laptop", multi_budget_runs=True)
    assert branched.base.optim.schedule == "wsd"
    assert _points(branched) == _points(separate)
    assert len(branched.example_runs()) < len(separate.example_runs())


def test_multi_budget_is_refused_where_it_cannot_work():
    with pytest.raises(ConfigError, match="does not vary the data budget"):
        build_study("mask_ratio_sweep", "smoke", multi_budget_runs=True)
    with pytest.raises(ConfigError, match="needs --schedule wsd"):
        build_study("scaling_grid", "smoke", multi_budget_runs=True, schedule="cosine")
    with pytest.raises(ConfigError, match="ASHA"):
        multi_budget(dataclasses.replace(build_study("scaling_grid", "smoke"), asha=True))


def test_a_multi_budget_study_warms_every_run_up_for_the_steps_its_smallest_budget_would():
    """The paper grid's budgets are 2, 8 and 20 Gi tokens of 1 Mi-token batches: 10% of 2,048 steps is 204,
    for the parent, its branches and a standalone run asked for with --warmup-steps 204 alike; the preset's
    fractional warmup (2,048 steps at 20 Gi) is another law."""
    from meap_scale.study.spec import study_runs

    study = build_study("scaling_grid", "paper", multi_budget_runs=True)
    runs = [spec for _, spec in study_runs(study)]
    assert {spec.warmup for spec in runs} == {204} and any(spec.branch_of for spec in runs)
    branch = next(spec for spec in runs if spec.branch_of)
    alike = build_study("scaling_grid", "paper", schedule="wsd", warmup_steps=204).example_runs()
    fractional = build_study("scaling_grid", "paper", schedule="wsd").example_runs()
    key = law_key({"config_json": branch.to_json()})
    assert key == law_key({"config_json": alike[0].to_json()}) and key["optim.warmup_steps"] == 204
    assert "optim.warmup_fraction" not in key and key != law_key({"config_json": fractional[0].to_json()})
    assert build_study("scaling_grid", "paper", multi_budget_runs=True, warmup_steps=50).base.warmup == 50


def test_plan_counts_each_branch_by_its_cooldown_and_says_what_branches_save(capsys):
    options = ["plan", "scaling_grid", "--preset", "paper", "--simulations", "0", "--warmup-fraction", "0.05"]
    assert cli([*options, "--json"]) == 0
    separate = json.loads(capsys.readouterr().out)
    assert cli([*options, "--json", "--multi-budget"]) == 0
    branched = json.loads(capsys.readouterr().out)
    assert len(branched["runs"]) == len(separate["runs"]) == 24
    assert separate["flops"] == pytest.approx(separate["standalone_flops"])
    assert branched["standalone_flops"] == pytest.approx(separate["flops"])
    # budgets 2, 8 and 20 Gi tokens, cooldowns 20%: 20 + 0.2 (2 + 8) = 22 of 30 per family
    assert branched["flops"] / separate["flops"] == pytest.approx(22 / 30, rel=1e-3)
    assert branched["wall_hours"] < separate["wall_hours"]
    assert cli([*options, "--multi-budget"]) == 0
    assert "(27% saved; each branch trains only its cooldown)" in capsys.readouterr().out


def _law_rows(prepared, branched: bool) -> list[dict]:
    """Rows of five sizes at 1, 2 and 4 M tokens whose validation loss follows L = 2 + 50 / N^0.3 + 50 / D^0.3:
    made as multi-budget runs (4 M with branches at 1 and 2 M) or as separate WSD runs."""
    from meap_scale.config import ModelSpec
    from meap_scale.store.rows import run_row
    from meap_scale.store.store import utc_now

    optim = OptimSpec(schedule="wsd", warmup_steps=20)
    rows = []
    for size in ("debug", "xs", "s", "m", "0.1b"):
        main = RunSpec(model=ModelSpec(size=size), optim=optim, tokens=4 * 2 ** 20,
                       decay_at=(2 ** 20, 2 * 2 ** 20) if branched else ())
        family = [main, *branches(main)] if branched else \
            [dataclasses.replace(main, tokens=tokens) for tokens in (2 ** 20, 2 * 2 ** 20, 4 * 2 ** 20)]
        for spec in family:
            row = run_row(spec, prepared, final={"tokens": spec.tokens_trained}, status="finished",
                          started_at=utc_now(), wall_seconds=1.0, env={})
            row["val_loss"] = 2 + 50 / row["params_total"] ** 0.3 + 50 / spec.tokens_trained ** 0.3
            rows.append(row)
    return rows


def test_branch_rows_enter_one_law_with_separate_runs_at_their_whole_budgets(prepared, tmp_path):
    """Bookkeeping only (the losses are written by one formula): a branch row is a point at its whole budget
    in its parent's law; tests above show that a branch trains as a standalone run of its budget does."""
    from meap_scale.scaling.from_store import fit_groups
    from meap_scale.store import ResultsStore

    fits = {}
    for branched in (True, False):
        store = ResultsStore(str(tmp_path / f"branched-{branched}"))
        store.append("runs", _law_rows(prepared, branched))
        parents = [row["parent_run_id"] for row in store.runs().to_pylist()]
        assert sum(p is not None for p in parents) == (10 if branched else 0)
        (fits[branched],) = fit_groups(store)
        assert len(fits[branched].run_ids) == 15
    assert sorted(fits[True].compute) == sorted(fits[False].compute)  # a branch counts its whole budget


def test_plan_of_one_multi_budget_run_lists_its_branches(capsys):
    assert cli(["plan", "--schedule", "wsd", "--warmup-steps", "95", "--tokens", "4e9", "--decay-at", "1e9", "2e9",
                "--model", "0.1b",
                "--batch-tokens", "1048576", "--workers", "8", "--micro-batch-size", "4", "--seq-len", "2048",
                "--json", "--repeat-data"]) == 0  # 4e9 tokens of the bundled corpus: refused without it
    plan = json.loads(capsys.readouterr().out)
    assert [(run["tokens"], run.get("decay branch")) for run in plan["runs"]] == [
        (953 * 2 ** 20, "yes"), (1907 * 2 ** 20, "yes"), (3814 * 2 ** 20, None)]
    assert plan["flops"] < plan["standalone_flops"]


def test_the_report_counts_what_branches_trained_not_the_budgets_they_stand_for(prepared, tmp_path):
    from meap_scale.report.data import load_report_data
    from meap_scale.report.sections import summary
    from meap_scale.store import ResultsStore

    store = ResultsStore(str(tmp_path))
    store.append("runs", _law_rows(prepared, branched=True))
    facts = dict(summary(load_report_data(store)).tables[0].rows)
    cooldowns = round(0.2 * 128) + round(0.2 * 256)  # steps of 8192 tokens: budgets of 128 and 256 steps
    assert facts["tokens trained"] == f"{5 * (4 * 2 ** 20 + cooldowns * 8192):,}"
    assert facts["decay branches"].startswith("10 finished run(s) branched from a longer WSD run")
