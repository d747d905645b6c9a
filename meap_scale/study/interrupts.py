"""SIGINT and SIGTERM during a study: Tune's graceful stop, then an honest exit status.

Tune stops an experiment gracefully on SIGINT or SIGUSR1: it saves its state (so the same name
resumes), stops the trials and calls ``on_experiment_end``, where ``TrialEnds`` records the runs in
flight as interrupted. It ignores SIGTERM, which a scheduler or ``kill`` sends, and it does not tell
its caller that it was interrupted. ``Interrupts`` takes both signals (with Tune's own SIGINT handler
off), remembers which arrived, and hands the first to Tune as SIGUSR1; a second one ends the process
at once. Outside a ``fit`` (Tune not listening) the first signal raises ``KeyboardInterrupt``.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)
DISABLE_TUNE_HANDLER = "TUNE_DISABLE_SIGINT_HANDLER"


def exit_status(signum: int) -> int:
    """The shell's convention: 128 + the signal number (130 for SIGINT, 143 for SIGTERM)."""
    return 128 + signum


class Interrupts:
    """``with Interrupts() as interrupts: tuner.fit()``; afterwards ``interrupts.signum`` is the first
    signal received, or None."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._saved: dict[int, object] = {}
        self._saved_env: str | None = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:  # the second signal: stop waiting for a graceful end
            self.__exit__()
            raise KeyboardInterrupt
        self.signum = signum
        if callable(signal.getsignal(signal.SIGUSR1)):  # inside fit
            os.kill(os.getpid(), signal.SIGUSR1)  # Tune's handler: stop the experiment gracefully
        else:
            raise KeyboardInterrupt

    def __enter__(self) -> "Interrupts":
        if threading.current_thread() is threading.main_thread():
            self._saved = {sig: signal.getsignal(sig) for sig in (*SIGNALS, signal.SIGUSR1)}
            for sig in SIGNALS:
                signal.signal(sig, self._handle)
            signal.signal(signal.SIGUSR1, signal.SIG_DFL)  # until Tune installs its handler in fit
            self._saved_env = os.environ.get(DISABLE_TUNE_HANDLER)
            os.environ[DISABLE_TUNE_HANDLER] = "1"
        return self

    def __exit__(self, *exc) -> None:
        saved, self._saved = self._saved, {}
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        if saved:
            if self._saved_env is None:
                os.environ.pop(DISABLE_TUNE_HANDLER, None)
            else:
                os.environ[DISABLE_TUNE_HANDLER] = self._saved_env
