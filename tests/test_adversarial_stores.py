"""Stores that try to break the fitter and the report: non-finite and diverged losses, one size, one
objective, old-schema files, HTML and unicode in every string field, 10,000 runs, law groups that must not mix."""

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from meap_scale.cli import main
from meap_scale.config import DataSpec, RunSpec
from meap_scale.report.build import build_report
from meap_scale.scaling import ScalingFitError
from meap_scale.scaling.from_store import fit_groups
from meap_scale.store import ResultsStore
from synthetic_store import synthetic_runs, write_synthetic_store

HOSTILE = "<script>alert(1)</script>\u2603\u202e<img src=x onerror=alert(2)>"


def law_runs(objective="ntp", ratio=0.0, shift=0.0, seed=0, **extra) -> list[dict]:
    """6 sizes x 4 budgets of a known law with 0.2% noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in np.geomspace(1e7, 1e9, 6):
        for d in np.geomspace(1e9, 1e11, 4):
            loss = (1.8 + 400 / n ** 0.34 + 600 / d ** 0.28 + shift) * math.exp(rng.normal(0, 0.002))
            rows.append({"run_id": f"{objective}{ratio}-{n:.3g}-{d:.3g}-{extra}", "status": "finished",
                         "objective": objective, "mask_ratio": ratio, "params_total": int(n), "tokens_seen": int(d),
                         "seed": 0, "lr": 1e-3, "val_loss": loss, "unigram_entropy": 7.0, **extra})
    return rows


def test_one_nan_and_one_diverged_run_do_not_spoil_a_law(tmp_path):
    clean = ResultsStore(str(tmp_path / "clean"))
    clean.append("runs", law_runs())
    dirty = ResultsStore(str(tmp_path / "dirty"))
    bad = [dict(law_runs()[0], run_id="nan", val_loss=float("nan")),
           dict(law_runs()[1], run_id="diverged", val_loss=55.0),
           dict(law_runs()[2], run_id="inf", val_loss=float("inf"))]
    dirty.append("runs", law_runs() + bad)
    reference, = fit_groups(clean)
    result, = fit_groups(dirty)
    assert result.fit.beta == pytest.approx(reference.fit.beta, rel=1e-6)
    assert result.fit.E == pytest.approx(reference.fit.E, rel=1e-6)
    notes = " ".join(result.notes)
    assert "2 run(s) left out: no finite validation loss" in notes and "1 run(s) left out: diverged" in notes


def test_laws_of_two_corpora_two_learning_rates_and_two_studies_fit_one_law_per_proper_group(tmp_path, capsys):
    store = ResultsStore(str(tmp_path))
    rows = []
    for corpus, shift in (("bundled:kjv", 0.0), ("/data/web.jsonl", 0.3)):
        for lr, penalty in ((1e-3, 0.0), (3e-3, 0.05)):
            for objective, ratio, gain in (("ntp", 0.0, 0.0), ("meap", 0.15, -0.02)):
                for row in law_runs(objective, ratio, shift + penalty + gain, data_source=corpus):
                    rows.append({**row, "run_id": f"{row['run_id']}-{lr}", "lr": lr,
                                 "study": "grid-a" if row["params_total"] < 1e8 else "grid-b"})
    unfinished = [{**rows[0], "run_id": f"{rows[0]['run_id']}-{status}", "status": status, "seed": 7}
                  for status in ("stopped", "failed", "interrupted")]  # same law, ended early
    store.append("runs", rows + unfinished)
    results = fit_groups(store)
    assert len(results) == 4  # 2 corpora x 2 objectives; studies and learning rates do not split laws
    for result in results:
        assert len(result.run_ids) == 24 and result.fit is not None
        assert any("learning rate: the best of 2" in note for note in result.notes)
        assert any("24 run(s) left out: at a learning rate" in note for note in result.notes)
        assert "data.source" in result.group
    assert sum("1 run(s) left out: status stopped" in note for r in results for note in r.notes) == 1
    assert main(["fit", "--store", str(tmp_path), "--bootstrap", "0"]) == 0
    out = capsys.readouterr().out
    # one seed: its 24 pairs are one replicate, so no verdict, whatever their consistency
    assert out.count("minus ntp, val_loss paired by seed") == 2
    assert out.count("no test (1 seed(s), 24 pair(s); a verdict needs at least 2 seeds") == 2
    assert all(f"1 run(s) left out: status {status}" in out for status in ("stopped", "failed", "interrupted"))
    page = Path(build_report(str(tmp_path), str(tmp_path / "report.html"), bootstrap=0).path).read_text()
    assert page.count("24 run(s) left out: at a learning rate") == 4  # one law per proper group, each says so
    assert all(f"1 run(s) left out: status {status}" in page for status in ("stopped", "failed", "interrupted"))
    with pytest.raises(ScalingFitError, match=r"differ in data.source"):
        fit_groups(store, group_by=("objective", "mask_ratio"))


def test_runs_of_different_sequence_lengths_are_different_laws_and_cannot_be_pooled(tmp_path):
    store = ResultsStore(str(tmp_path))
    rows = []
    for seq_len in (64, 128):
        spec = RunSpec(data=DataSpec(seq_len=seq_len))
        rows += [{**r, "run_id": f"{r['run_id']}-{seq_len}", "config_json": spec.to_json(), "seq_len": seq_len}
                 for r in law_runs()]
    store.append("runs", rows)
    assert sorted(r.group["data.seq_len"] for r in fit_groups(store)) == [64, 128]
    with pytest.raises(ScalingFitError, match=r"data.seq_len \['128', '64'\]"):
        fit_groups(store, group_by=("objective",))


def test_a_store_of_hostile_values_builds_a_report_and_fits_without_crashing(tmp_path):
    runs = synthetic_runs(seed=0)
    runs[0]["val_loss"], runs[1]["val_loss"], runs[2]["train_loss"] = float("nan"), float("inf"), float("-inf")
    runs[3]["val_loss"], runs[3]["unigram_entropy"] = 1e6, 6.0
    for key in ("study", "model_size", "hardware", "git_commit", "data_source", "tokenizer", "error"):
        runs[4][key] = HOSTILE
    write_synthetic_store(str(tmp_path), runs=runs, failures=((HOSTILE, HOSTILE),))
    # an old-schema file: only the required columns and a few others
    pq.write_table(pa.table({"run_id": ["old-1"], "status": ["finished"], "val_loss": [3.0],
                             "written_at": pa.array([runs[0].get("written_at") or 0], pa.timestamp("us", tz="UTC"))}),
                   str(tmp_path / "runs" / "part-old.parquet"))
    built = build_report(str(tmp_path), str(tmp_path / "report.html"), bootstrap=10)
    page = open(built.path, encoding="utf-8").read()
    assert "<script>alert(1)" not in page and "<img src=x" not in page
    assert "2 finished run(s): no finite validation loss" in page and "diverged" in page
    data = page.split('<script type="application/json" id="report-data">')[1].split("</script>")[0]
    json.loads(data, parse_constant=lambda token: pytest.fail(f"non-strict JSON token {token} in the page data"))
    assert main(["fit", "--store", str(tmp_path), "--bootstrap", "10"]) in (0, 1)
    for row in ResultsStore(str(tmp_path)).read("fits").to_pylist():
        for text in (row["params_json"], row["intervals_json"]):
            json.loads(text, parse_constant=lambda token: pytest.fail(f"non-strict JSON token {token}"))


def test_a_single_size_or_one_objective_says_what_it_cannot_fit(tmp_path):
    store = ResultsStore(str(tmp_path))
    store.append("runs", [r for r in law_runs() if r["params_total"] == int(1e7)])
    built = build_report(str(tmp_path), str(tmp_path / "report.html"), bootstrap=0)
    page = open(built.path, encoding="utf-8").read()
    assert "4 point(s) cannot determine 5 parameters" in page
    assert "meap_vs_ntp" in built.missing


@pytest.mark.slow
def test_a_store_of_ten_thousand_runs_builds_its_report(tmp_path):
    runs = [dict(run, run_id=f"{run['run_id']}-{copy}", seed=copy) for copy in range(97)
            for run in synthetic_runs(seed=1)][:10_000]
    write_synthetic_store(str(tmp_path), runs=runs, curve_points=3)
    built = build_report(str(tmp_path), str(tmp_path / "report.html"), bootstrap=0)
    assert "runs" in built.sections and "fits" in built.sections


def test_runs_that_repeated_their_corpus_are_left_out_of_laws_with_the_reason(tmp_path):
    store = ResultsStore(str(tmp_path))
    rows = law_runs()
    repeated = [dict(row, run_id=f"{row['run_id']}-again", epochs=3.8, val_loss=row["val_loss"] * 0.9)
                for row in rows[:5]]
    store.append("runs", [dict(row, epochs=0.5) for row in rows] + repeated)
    result, = fit_groups(store)
    assert len(result.run_ids) == len(rows) and not set(result.run_ids) & {r["run_id"] for r in repeated}
    assert "5 run(s) left out: trained past one epoch of its corpus" in " ".join(result.notes)


def test_a_corpus_moved_to_another_path_is_the_same_law_and_other_content_is_not(tmp_path):
    """The law key names the corpus by its content fingerprint where the row has one, so runs of one corpus read
    from two mounts pool; a corpus whose content differs (one byte) never does."""
    import shutil

    from meap_scale.data.sources import bundled_path, fingerprint, resolve_source
    from meap_scale.scaling.groups import law_key

    paths = {name: tmp_path / name / "kjv.jsonl.xz" for name in ("here", "moved", "edited")}
    for path in paths.values():
        path.parent.mkdir()
        shutil.copy(bundled_path("kjv"), path)
    with open(paths["edited"], "ab") as handle:
        handle.write(b"\0")
    keys = {name: law_key({"config_json": RunSpec(data=DataSpec(source=str(path))).to_json(),
                           "data_fingerprint": fingerprint(resolve_source(str(path)))})
            for name, path in paths.items()}
    assert keys["here"] == keys["moved"] and "data.source" not in keys["here"]
    assert keys["edited"] != keys["here"]
    without = law_key({"config_json": RunSpec(data=DataSpec(source=str(paths["here"]))).to_json()})
    assert without["data.source"] == str(paths["here"])  # a row without a fingerprint keeps its path


def test_one_training_stored_under_two_run_ids_is_one_point_of_its_law(prepared):
    """The same spec trained on the same corpus read from two paths has two run ids (the id is known before the
    corpus is read) but one training: the law keeps the latest stored row and says why the other is left out.
    Another seed is another training, and stays."""
    import datetime as dt

    from meap_scale.scaling.groups import group_runs
    from meap_scale.store.rows import run_row

    now = dt.datetime(2026, 12, 8, tzinfo=dt.timezone.utc)
    rows = []
    for k, (source, seed) in enumerate((("/data/kjv.jsonl", 0), ("/mnt/moved/kjv.jsonl", 0), ("/data/kjv.jsonl", 1))):
        spec = RunSpec(data=DataSpec(source=source), seed=seed)
        row = run_row(spec, prepared, final={"tokens": spec.tokens_trained, "val_loss": 3.0 + k, "train_loss": 3.0},
                      status="finished", started_at=now, wall_seconds=1.0)
        rows.append({**row, "written_at": now + dt.timedelta(seconds=k), "stored_at": now + dt.timedelta(seconds=k)})
    assert len({row["run_id"] for row in rows}) == 3
    [group] = group_runs(rows)
    assert sorted(row["val_loss"] for row in group.runs) == [4.0, 5.0]  # the moved copy (later) and seed 1
    assert group.excluded == {f"the same training as run {rows[1]['run_id']} (its corpus read from another path)": 1}
