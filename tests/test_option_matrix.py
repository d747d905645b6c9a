"""Every user-facing command, given a bad value, fails fast: exit 2, a message naming the option and the
value (or what is wrong with it), and no Ray started. All cases run in one subprocess, one import."""

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import tiny_run
from meap_scale.data import prepare_data
from meap_scale.store import ResultsStore
from meap_scale.train.loop import train_loop_per_worker

PROBE = """
import contextlib, io, json, sys
import ray
from meap_scale.cli import main
from meap_scale.cli.study import main as study_main
results = []
for program, argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            rc = main(argv) if program == "meap-scale" else study_main(program, argv)
        except SystemExit as done:
            rc = done.code
    results.append({"rc": rc, "err": err.getvalue(), "ray": ray.is_initialized()})
print(json.dumps(results))
"""


def cases(paths: dict) -> list[tuple[str, list[str], tuple[str, ...]]]:
    """(program, argv, fragments the error must contain); program is meap-scale or a study script."""
    file, missing, store, checkpoint = paths["file"], paths["missing"], paths["store"], paths["checkpoint"]
    table = [
        ("meap-scale", ["train", "--workers", "4", "--cpus-per-worker", "64"], ("--workers", "4 worker(s)", "CPUs")),
        ("meap-scale", ["train", "--workers", "64"], ("64 worker(s)", "--workers", "--batch-tokens")),
        ("meap-scale", ["train", "--storage-path", file], ("--storage-path", file, "is a file")),
        ("meap-scale", ["train", "--store", file], ("--store", file, "is a file")),
        ("meap-scale", ["train", "--tokens", "2.5"], ("--tokens", "'2.5'", "whole number")),
        ("meap-scale", ["train", "--model", "huge"], ("--model", "'huge'", "'debug'")),
        ("meap-scale", ["train", "--mask-ratio", "1.5"], ("mask_ratio", "1.5", "[0, 1)")),
        ("meap-scale", ["train", "--placement", "NOWHERE"], ("--placement", "'NOWHERE'", "STRICT_SPREAD")),
        ("meap-scale", ["train", "--seq-len", "64", "--eval-tasks", "needle", "--eval-context-lens", "100000"],
         ("context_lens", "100000")),
        ("meap-scale", ["train", "--data", missing], (missing,)),
        ("meap-scale", ["study", "mask_ratio_sweep", "--preset", "huge"], ("--preset", "'huge'", "smoke")),
        ("mask_ratio_sweep", ["--preset", "smoke", "--tokens", "-5"], ("--tokens", "'-5'", "below 1")),
        ("mask_ratio_sweep", ["--preset", "smoke", "--workers", "0"], ("--workers", "'0'", "below 1")),
        ("mask_ratio_sweep", ["--preset", "smoke", "--workers", "2", "--cpus-per-worker", "64"],
         ("--workers", "2 worker(s)", "CPUs")),
        ("mask_ratio_sweep", ["--preset", "smoke", "--max-concurrent", "0"], ("--max-concurrent", "'0'")),
        ("mask_ratio_sweep", ["--preset", "smoke", "--store", file], ("--store", file, "is a file")),
        ("mask_ratio_sweep", ["--preset", "smoke", "--store", "gs://bucket/study"], ("gs://bucket/study", "gcsfs")),
        ("scaling_grid", ["--preset", "smoke", "--gpus-per-worker", "3"], ("--gpus-per-worker", "3")),
        ("isoflop", ["--preset", "smoke", "--data", missing], (missing,)),
        ("meap-scale", ["eval", "--checkpoint", missing], (missing, "not a meap-scale checkpoint")),
        ("meap-scale", ["eval", "--checkpoint", checkpoint, "--tasks", "gsm8k"], ("gsm8k", "evals.tasks")),
        ("meap-scale", ["eval", "--checkpoint", checkpoint, "--per-cell", "0"], ("--per-cell", "'0'")),
        ("meap-scale", ["eval", "--checkpoint", checkpoint, "--tasks", "needle", "--context-lens", "100000"],
         ("'needle'", "--context-lens", "100000")),
        ("meap-scale", ["eval", "--checkpoint", checkpoint, "--tasks", "multidoc", "--documents", "20",
                        "--doc-tokens", "40"], ("'multidoc'", "--documents", "--doc-tokens")),
        ("meap-scale", ["eval", "--study", "s", "--store", missing], ("no results store", missing)),
        ("meap-scale", ["eval", "--study", "s"], ("--store",)),
        ("meap-scale", ["fit", "--store", missing], ("no results store", missing, "--store")),
        ("meap-scale", ["fit", "--store", store, "--group-by", "nonsense"], ("nonsense",)),
        ("meap-scale", ["fit", "--store", store, "--bootstrap", "-1"], ("--bootstrap", "'-1'")),
        ("meap-scale", ["fit", "--store", store, "--approach", "4"], ("--approach", "invalid choice: 4")),
        ("meap-scale", ["report", "--store", missing], ("no results store", missing)),
        ("meap-scale", ["report", "--store", store, "--bootstrap", "-3"], ("--bootstrap", "'-3'")),
        ("meap-scale", ["store", "ls", "--store", missing], ("no results store", missing)),
        ("meap-scale", ["store", "ls", "--store", store, "--status", "weird"], ("--status", "'weird'")),
        ("meap-scale", ["store", "show", "nope", "--store", store], ("'nope'",)),
        ("meap-scale", ["store", "export", "--store", store, "--table", "nope", "--out", file], ("--table", "'nope'")),
    ]
    if torch.cuda.device_count() == 0:  # a GPU asked for where there is none
        table += [("meap-scale", ["train", "--gpu"], ("--gpu", "GPU(s)", "has 0")),
                  ("mask_ratio_sweep", ["--preset", "smoke", "--gpus-per-worker", "1"],
                   ("--gpus-per-worker 1", "has 0"))]
    return table


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("options")
    (root / "a-file").write_text("not a folder")
    spec = tiny_run()
    train_loop_per_worker({"run": spec.to_dict(), "data": prepare_data(spec.data).to_dict(),
                           "checkpoint_root": str(root / "ckpt")})
    ResultsStore(str(root / "store")).append_run({"run_id": "r", "status": "finished", "study": "s"})
    return {"file": str(root / "a-file"), "missing": str(root / "no" / "such" / "path"),
            "store": str(root / "store"), "checkpoint": str(sorted((root / "ckpt").glob("step-*"))[-1])}


def test_every_bad_option_fails_fast_with_its_name_and_value_and_starts_no_ray(paths, tmp_path):
    table = cases(paths)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps([[p, a] for p, a, _ in table])], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    failures = []
    for (program, argv, fragments), result in zip(table, results):
        missing = [f for f in fragments if f not in result["err"]]
        if result["rc"] != 2 or missing or result["ray"]:
            failures.append(f"{program} {' '.join(argv)}: rc={result['rc']} ray={result['ray']} missing={missing}\n"
                            f"{result['err'][-600:]}")
    assert not failures, "\n\n".join(failures)
    assert not list(tmp_path.iterdir())  # nothing written where the commands ran


GPU_PROBE = """
import sys
from meap_scale.cli import main
from meap_scale.cli.study import main as study_main
print(main(["train", "--gpu", "--workers", "16", "--micro-batch-size", "2"]))
print(study_main("mask_ratio_sweep", ["--preset", "smoke", "--gpus-per-worker", "1", "--workers", "16", "--store",
                                      sys.argv[1]]))
"""


def test_more_gpus_than_this_machine_has_are_refused_before_the_corpus_is_prepared(tmp_path):
    """Preparing a real corpus takes hours, so a GPU run this machine cannot hold is refused before it: the cache
    stays empty (the bundled corpus, unprepared there). 16 GPU workers: more than the machines this suite runs on
    have (none, or one when a GPU is lent)."""
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "MEAP_SCALE_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", GPU_PROBE, str(tmp_path / "store")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["2", "2"], done.stdout + done.stderr[-3000:]
    assert done.stderr.count("16 GPU worker(s)") == 2 and "--gpus-per-worker 1" in done.stderr
    cache = tmp_path / "cache"
    assert not cache.exists() or not any(cache.rglob("*")), sorted(cache.rglob("*"))
