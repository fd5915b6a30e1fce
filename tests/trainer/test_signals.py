from __future__ import annotations

import os
import signal

import pytest
from mgft_train import signals


@pytest.fixture
def restore_handlers():
    saved = {s: signal.getsignal(s) for s in signals.STOP_SIGNALS}
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
