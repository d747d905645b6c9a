"""The preflight, for real: every study's every preset dry-runs on a generated local corpus (the real sample
reader, BPE trainer, item builders and estimates; nothing prepared, no Ray), and each refusal is caused by the
input that causes it."""

import json
import random

import pytest
import ray

from meap_scale.cli import main
from meap_scale.cli.study import main as study_main
from meap_scale.study import contract
from meap_scale.study.presets import PRESETS, STUDIES, build_study
from meap_scale.store import ResultsStore

# Each test checks that nothing starts Ray, and what this machine holds: the session's Ray, were it up, would be
# joined instead. So it is shut down first, and these tests run last with the others that need it down.
pytestmark = pytest.mark.usefixtures("no_ray_in_process")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """About 1 MB of JSONL in the words the eval items use (a BPE of 4096 tokens then spells a fact in a few):
    enough text for the paper preset's 4088-token needles, far too little for its budgets."""
    from meap_scale.evals.items import KEY_ADJECTIVES, KEY_NOUNS, VALUES

    rng = random.Random(0)
    words = [*KEY_ADJECTIVES, *KEY_NOUNS, *VALUES, *"the secret word of is what leads to and a in it was".split()]
    path = tmp_path_factory.mktemp("corpus") / "generated.jsonl"
    with open(path, "w") as handle:
        for _ in range(800):
            sentences = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 15))).capitalize() + "."
                         for _ in range(rng.randint(10, 25))]
            handle.write(json.dumps({"text": " ".join(sentences)}) + "\n")
    return str(path)


def nothing_prepared(cache) -> bool:
    return not cache.exists() or not any(cache.rglob("*"))


@pytest.mark.parametrize("preset", PRESETS)
def test_every_study_of_every_preset_dry_runs_on_a_generated_corpus_without_preparing_it(preset, corpus, tmp_path,
                                                                                         monkeypatch, capsys):
    if preset == "paper":  # GPU runs: the cluster they would join is checked once joined
        monkeypatch.setenv("RAY_ADDRESS", "ray://head.example:10001")
    for study in STUDIES:
        argv = ["--preset", preset, "--data", corpus, "--store", str(tmp_path / "store"), "--cache-dir",
                str(tmp_path / "cache"), "--dry-run", "--repeat-data"]
        assert study_main(study, argv) == 0, capsys.readouterr()
        out = capsys.readouterr().out
        assert "would start" in out and "REFUSED" not in out
        assert "eval items" in out and "item(s) at seq_len" in out  # built for real, from the sample
        assert ("not checked resources" in out) == (preset == "paper")
    assert nothing_prepared(tmp_path / "cache") and not (tmp_path / "store").exists()
    assert not ray.is_initialized()


def dry_train(argv: list[str], tmp_path, capsys) -> tuple[int, str]:
    rc = main(["train", "--data", argv.pop(0), "--cache-dir", str(tmp_path / "cache"), "--storage-path",
               str(tmp_path / "runs"), "--dry-run", *argv])
    out = capsys.readouterr().out
    assert nothing_prepared(tmp_path / "cache") and not ray.is_initialized()
    return rc, out


def refused(out: str, check: str) -> str:
    lines = [line for line in out.splitlines() if line.strip().startswith(f"REFUSED     {check}")]
    assert lines, out
    return lines[0]


def test_a_run_longer_than_its_corpus_is_refused_unless_repeats_are_allowed(corpus, tmp_path, capsys):
    rc, out = dry_train([corpus, "--tokens", "5e6", "--seq-len", "64"], tmp_path, capsys)
    line = refused(out, "corpus size")
    assert rc == 2 and "4,997,120 tokens" in line and "epochs" in line and "--repeat-data" in line
    rc, out = dry_train([corpus, "--tokens", "5e6", "--seq-len", "64", "--repeat-data"], tmp_path, capsys)
    assert rc == 0 and "as --repeat-data allows" in out
    rc, out = dry_train([corpus, "--tokens", "65536", "--seq-len", "64"], tmp_path, capsys)
    assert rc == 0 and "epoch" in out


def test_the_estimate_of_a_corpus_lies_near_its_prepared_count(corpus, tmp_path, capsys):
    """Estimated from a sample's tokens per byte, then read from the preparation: measured 0.1% apart
    (the sample holds all of this corpus; the bundled one, estimated past its sample, measured 7% under)."""
    from meap_scale.config import DataSpec
    from meap_scale.data import prepare_data

    rc, out = dry_train([corpus, "--tokens", "65536", "--seq-len", "64"], tmp_path, capsys)
    estimate = float(out.split("the training split holds ")[1].split(" ")[0].replace(",", ""))
    prepared = prepare_data(DataSpec(source=corpus, seq_len=64, cache_dir=str(tmp_path / "other")))
    assert abs(estimate / prepared.train_tokens - 1) < 0.1, (estimate, prepared.train_tokens)


def test_eval_items_that_cannot_fit_the_context_are_refused_with_their_options(corpus, tmp_path, capsys):
    rc, out = dry_train([corpus, "--seq-len", "64", "--eval-tasks", "multidoc", "--eval-documents", "20",
                         "--eval-doc-tokens", "150"], tmp_path, capsys)
    line = refused(out, "eval items")
    assert rc == 2 and "multidoc" in line and "--eval-documents" in line


def test_a_run_this_machine_cannot_hold_is_refused_with_its_memory(corpus, tmp_path, capsys):
    rc, out = dry_train([corpus, "--model", "1.1b", "--seq-len", "4096", "--micro-batch-size", "64",
                         "--batch-tokens", "262144", "--eval-tasks", "heldout"], tmp_path, capsys)
    line = refused(out, "memory")
    assert rc == 2 and "GiB" in line and "this machine" in line


def test_more_workers_than_this_machine_has_are_refused_as_resources(corpus, tmp_path, capsys):
    rc, out = dry_train([corpus, "--workers", "64", "--batch-tokens", "65536", "--seq-len", "64",
                         "--micro-batch-size", "1"], tmp_path, capsys)
    assert rc == 2 and "--workers" in refused(out, "resources")


def test_a_tokenizer_that_cannot_be_loaded_is_refused(corpus, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for name, why in ((tmp_path / "empty", "could not load tokenizer"), (tmp_path / "missing", "does not exist")):
        rc, out = dry_train([corpus, "--tokenizer", str(name)], tmp_path, capsys)
        line = refused(out, "tokenizer")
        assert rc == 2 and why in line and str(name) in line
        assert "not costed" in out  # the model's size needs the tokenizer: said, not guessed


def test_a_corpus_that_cannot_be_read_is_refused(tmp_path, capsys):
    (tmp_path / "broken.jsonl").write_text('{"body": "a document without a text field"}\n')
    rc, out = dry_train([str(tmp_path / "broken.jsonl")], tmp_path, capsys)
    assert rc == 2 and "no column 'text'" in refused(out, "corpus")


def test_a_file_where_a_folder_belongs_is_refused_for_each_location(corpus, tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    rc = main(["train", "--data", corpus, "--cache-dir", str(tmp_path / "file" / "cache"), "--storage-path",
               str(tmp_path / "file"), "--store", str(tmp_path / "file" / "store"), "--dry-run"])
    out = capsys.readouterr().out
    assert rc == 2
    for option in ("--storage-path", "--store", "--cache-dir"):
        assert "is a file" in refused(out, option)


def test_a_study_name_taken_by_other_options_is_refused(corpus, tmp_path, capsys):
    store = str(tmp_path / "store")
    contract.record(build_study("mask_ratio_sweep", "smoke", data=corpus, storage=store, seeds=(0, 1)),
                    ResultsStore(store))
    rc = study_main("mask_ratio_sweep", ["--preset", "smoke", "--data", corpus, "--store", store, "--cache-dir",
                                         str(tmp_path / "cache"), "--dry-run"])
    out = capsys.readouterr().out
    assert rc == 2 and "other options" in refused(out, "study name") and nothing_prepared(tmp_path / "cache")
    rc = study_main("mask_ratio_sweep", ["--preset", "smoke", "--data", corpus, "--store", store, "--cache-dir",
                                         str(tmp_path / "cache"), "--dry-run", "--resume"])
    assert rc == 0 and "resumes the stored study" in capsys.readouterr().out


def test_a_refused_study_starts_nothing_and_says_why(corpus, tmp_path, capsys):
    """Without --dry-run the preflight refuses on the same checks, before the corpus or Ray, whether the study is
    started by its script or from Python (``run_study``)."""
    rc = study_main("scaling_grid", ["--preset", "laptop", "--data", corpus, "--store", str(tmp_path / "store"),
                                     "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert rc == 2 and "preflight refused" in err and "corpus size" in err
    assert nothing_prepared(tmp_path / "cache") and not ray.is_initialized()
    # A study started from Python is refused by the same preflight.
    from meap_scale.spec_base import ConfigError
    from meap_scale.study.runner import run_study

    spec = build_study("scaling_grid", "laptop", data=corpus, cache_dir=str(tmp_path / "cache"),
                       storage=str(tmp_path / "store"))
    with pytest.raises(ConfigError, match=r"preflight refused:\ncorpus size: .*--repeat-data"):
        run_study(spec)
    assert nothing_prepared(tmp_path / "cache") and not ray.is_initialized()
