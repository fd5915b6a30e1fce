from __future__ import annotations

import logging

import pytest
from mgft_train import quiet


def test_only_the_known_message_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    quiet.install()
    quiet.install()  # twice: still one filter
    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    assert len(logger.filters) == 1
    with caplog.at_level(logging.WARNING, logger=logger.name):
        logger.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please "
                       "make sure you already `pip install kernels`", "No module named 'kernels'")
        logger.warning("something else bitsandbytes has to say")
    assert [r.getMessage() for r in caplog.records] == ["something else bitsandbytes has to say"]
