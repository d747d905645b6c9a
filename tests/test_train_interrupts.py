"""``meap-scale train`` stopped by a signal while it trains: an honest exit status and the command that resumes,
not a traceback (Ray Train would otherwise take SIGINT for itself, and Ray's core aborts on SIGTERM)."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow
FORWARDED = re.compile(r"^(\x1b\[[0-9;]*m)*\(\w[\w.]* pid=\d+")
"""A line Ray forwards from one of its actors, e.g. ``(TrainController pid=123) ...``: Ray Train's controller
may log the calls the driver's exit cut short; the driver's own lines are what the user's command says."""


def test_sigterm_while_training_exits_143_with_the_command_that_resumes(no_ray_in_process, tmp_path):
    argv = ["train", "--tokens", "400000", "--seq-len", "64", "--batch-tokens", "1024", "--micro-batch-size", "16",
            "--checkpoint-every", "10", "--log-every", "5", "--storage-path", str(tmp_path / "runs")]
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    process = subprocess.Popen([sys.executable, "-m", "meap_scale.cli", *argv], stderr=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    seen = []
    deadline = time.monotonic() + 240
    for line in process.stderr:  # Ray Train prints each report of rank 0: training is under way
        seen.append(line)
        if "Reporting training result" in line or time.monotonic() > deadline:
            break
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    err = "".join(seen) + err
    assert process.returncode == 143, err[-3000:]
    own = "".join(line for line in err.splitlines(keepends=True) if not FORWARDED.match(line))
    assert "SIGTERM: run meap0.15-debug-s0-" in own and "interrupted" in own and "Traceback" not in own, own[-3000:]
    resume = err.split("when the same command runs again:\n", 1)[1].splitlines()[0].strip()
    assert resume.endswith(" ".join(argv)), resume
