"""The docs' commands work: the quickstart's are run as written; every training and study command in the
docs and the README is parsed by the command line it names; the README's test command is CI's."""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from meap_scale.store import ResultsStore

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md"]
FENCE = re.compile(r"^```(\S*)([^\n]*)\n(.*?)^```", re.M | re.S)


def blocks(path: Path) -> list[tuple[str, str, str]]:
    """(language, info after it, body) of each fenced block."""
    return [(m.group(1), m.group(2).strip(), m.group(3)) for m in FENCE.finditer(path.read_text())]


def commands(body: str) -> list[str]:
    """Lines of a shell block with backslash continuations joined and comments dropped."""
    out, current = [], ""
    for line in body.splitlines():
        line = line.split(" #", 1)[0].rstrip() if not line.lstrip().startswith("#") else ""
        current = f"{current} {line.rstrip(chr(92)).strip()}".strip()
        if not line.endswith("\\") and current:
            out.append(current)
            current = ""
    return out


def doc_commands(prefixes: tuple[str, ...]) -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        for language, _, body in blocks(path):
            if language not in ("", "sh", "bash", "console"):
                continue
            for command in commands(body):
                for part in command.split(" -- "):  # the study behind `ray job submit ... --`
                    if part.startswith(prefixes):
                        found.append((path.name, part))
    return found


TRAIN = doc_commands(("meap-scale train",))
STUDIES = doc_commands(("python studies/", "meap-scale study"))


@pytest.mark.parametrize("source, command", TRAIN, ids=[f"{s}:{c[:60]}" for s, c in TRAIN])
def test_every_train_command_in_the_docs_builds_a_run(source, command):
    from meap_scale.cli import build_parser
    from meap_scale.cli.spec_options import spec_from_args

    argv = shlex.split(command)[1:]
    if argv[1:] == ["--help"]:
        return
    spec_from_args(build_parser().parse_args(argv))


@pytest.mark.parametrize("source, command", STUDIES, ids=[f"{s}:{c[:60]}" for s, c in STUDIES])
def test_every_study_command_in_the_docs_builds_a_study(source, command):
    import argparse

    from meap_scale.cli.study import add_preflight_options, add_study_options, study_from_args

    argv = shlex.split(command.replace("$PWD", "/tmp"))
    study, rest = (Path(argv[1]).stem, argv[2:]) if argv[0] == "python" else (argv[2], argv[3:])
    assert (REPO / "studies" / f"{study}.py").is_file()
    parser = argparse.ArgumentParser()
    add_study_options(parser)
    add_preflight_options(parser, "study")
    study_from_args(study, parser.parse_args(rest))


PLANS = doc_commands(("meap-scale plan",))


@pytest.mark.parametrize("source, command", PLANS, ids=[f"{s}:{c[:60]}" for s, c in PLANS])
def test_every_plan_command_in_the_docs_prints_a_plan(source, command, capsys):
    """As written, but with 20 power simulations (the last --simulations wins): the command's parsing and every
    part of its plan are what is checked here; the power analysis's figures are tests/test_power.py's."""
    from meap_scale.cli import main

    assert main(shlex.split(command)[1:] + ["--simulations", "20"]) in (0, 1)  # 1: some run does not fit
    assert capsys.readouterr().out.startswith("GPU: ")


def test_the_docs_name_commands_at_all():
    assert len(TRAIN) >= 4 and len(STUDIES) >= 8 and len(PLANS) >= 2


def test_the_readme_test_command_is_what_ci_runs():
    readme = [c for _, _, body in blocks(REPO / "README.md") for c in commands(body) if "-m pytest" in c]
    ci = (REPO / ".ci" / "run").read_text().strip().splitlines()[-1]
    quickstart = [c for _, _, body in blocks(REPO / "docs" / "quickstart.md") for c in commands(body)
                  if "-m pytest" in c]
    assert readme == [ci] == quickstart


@pytest.mark.slow
def test_the_quickstart_runs_as_written(no_ray_in_process, tmp_path):
    block = [body for language, info, body in blocks(REPO / "docs" / "quickstart.md") if info == "quickstart"]
    assert len(block) == 1
    shutil.copytree(REPO / "studies", tmp_path / "studies")
    env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]}
    env.pop("RAY_ADDRESS", None)
    for command in commands(block[0]):
        done = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        if command.startswith("python studies/"):  # the driver hashed the corpus; its trials were handed it
            hashed = [line for line in (done.stdout + done.stderr).splitlines() if "hashing corpus" in line]
            assert len(hashed) == 1 and "repeated" not in hashed[0], hashed
    assert len(ResultsStore(str(tmp_path / "results")).runs().to_pylist()) == 2
    assert (tmp_path / "report.html").stat().st_size > 100_000
    assert (tmp_path / "figures" / "needle_heatmap.svg").exists()
    assert (tmp_path / "results" / "report-mask-ratio-smoke.html").exists()
