from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from mgft_train import signals


@pytest.fixture
def restore_handlers():
    saved = {s: signal.getsignal(s) for s in (*signals.STOP_SIGNALS, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR2])
def test_a_stop_signal_is_recorded_not_fatal(sig, restore_handlers):
    signals.install()
    assert not signals.requested()
    os.kill(os.getpid(), sig)  # would end this test process without the handler
    assert signals.requested()
    assert signals.received() == [signal.Signals(sig).name]
    signals.install()  # a fresh start forgets it
    assert not signals.requested()


def test_after_the_checkpoint_further_stop_signals_are_ignored(restore_handlers):
    signals.install()
    signals.ignore()
    os.kill(os.getpid(), signal.SIGTERM)
    assert not signals.requested()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN


STOPPED_BY_CTRL_C = """
import time
from mgft_train import signals
signals.install()
print("ready", flush=True)
time.sleep(60)
"""


def test_ctrl_c_ends_a_rank_at_once_without_a_traceback():
    """The last complete checkpoint is what is kept; a KeyboardInterrupt traceback per rank
    would say nothing more."""
    proc = subprocess.Popen([sys.executable, "-c", STOPPED_BY_CTRL_C], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGINT
    assert err == ""


def test_a_signal_received_twice_is_named_once(restore_handlers):
    """torchrun (or Slurm, then torchrun) passes SIGTERM on to a rank that already got it:
    the trainer's line said "stopped by SIGTERM/SIGTERM"."""
    signals.install()
    for sig in (signal.SIGTERM, signal.SIGUSR2, signal.SIGTERM):
        os.kill(os.getpid(), sig)
    assert signals.received() == ["SIGTERM", "SIGUSR2"]
