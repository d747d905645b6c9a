"""``meap-scale train`` stopped by a signal while it trains: an honest exit status and the command that resumes,
not a traceback (Ray Train would otherwise take SIGINT for itself, and Ray's core aborts on SIGTERM)."""

import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow


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
    assert "SIGTERM: run meap0.15-debug-s0-" in err and "interrupted" in err and "Traceback" not in err
    resume = err.split("when the same command runs again:\n", 1)[1].splitlines()[0].strip()
    assert resume.endswith(" ".join(argv)), resume
