"""Pre-emption: the signals that ask a training run to checkpoint and stop, the flag the loop polls, and the exit
status that tells Snakemake's ``retries`` to run the job again (it then resumes from the checkpoint).

SLURM sends SIGTERM at the time limit or on pre-emption, and SIGUSR1 with ``--signal=B:USR1@120``. A handler only
sets a flag: the loop finishes the current step, writes a checkpoint and returns; previous handlers come back when
training returns.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any

from workflow_scripts.errors import PipelineError

log = logging.getLogger(__name__)

#: exit status for a step whose training was pre-empted after writing a checkpoint (sysexits EX_TEMPFAIL: "try
#: again"): non-zero, so Snakemake does not look for the missing model file and, with ``retries``, reruns the job
PREEMPTED_EXIT_CODE = 75
#: signals that request a clean stop (SLURM: SIGTERM at the time limit / on pre-emption, SIGUSR1 via --signal)
STOP_SIGNALS: tuple[int, ...] = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGUSR1", None))
                                      if s is not None)
#: the value of :attr:`StopFlag.signum` when a callback (not a signal) asked for the stop
CALLBACK_STOP = -1


class Preempted(PipelineError):
    """Training stopped on SIGTERM/SIGUSR1 after writing its checkpoint; rerun the step to resume."""

    exit_code = PREEMPTED_EXIT_CODE


class StopFlag:
    """Set by SIGTERM / SIGUSR1 (or by the loop for a callback's request); the loop polls it between steps."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __bool__(self) -> bool:
        return self.signum is not None

    def _handler(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
            # no logging here: a handler may interrupt a logging call that holds the handler's lock
            try:
                os.write(2, f"\nsignal {signum} received: finishing the current step, then checkpointing\n".encode())
            except OSError:
                pass

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            log.warning("train() runs outside the main thread: SIGTERM/SIGUSR1 will not trigger a clean checkpoint")
            return
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handler)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()


def worker_ignores_stop_signals(worker_id: int) -> None:
    """SLURM signals every process of the job: a data-loading worker must survive SIGTERM/SIGUSR1 long enough for
    the main process to finish its step and checkpoint (workers exit on their own when the main process does)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


__all__ = ["CALLBACK_STOP", "PREEMPTED_EXIT_CODE", "STOP_SIGNALS", "Preempted", "StopFlag",
           "worker_ignores_stop_signals"]
