"""Third-party messages that tell an mgft user nothing, dropped before their libraries load.

Only exact, known messages: anything else a library says still shows.
"""

from __future__ import annotations

import logging

# logger -> the start of the message dropped from it
KNOWN_NOISE = {
    # bitsandbytes, imported through peft by every run (LoRA and full fine-tunes too), looks
    # for a faster CPU 4-bit kernel in the `kernels` package, which downloads code from the
    # Hugging Face Hub; mgft does not install it, and bitsandbytes' own kernel serves QLoRA.
    "bitsandbytes.backends.cpu.ops": "Failed to load CPU gemm_4bit_forward from kernels-community",
}


class _Drop(logging.Filter):
    def __init__(self, start: str) -> None:
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.start)


def install() -> None:
    """Call before importing torch-side libraries; calling it again adds nothing."""
    for name, start in KNOWN_NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Drop) and f.start == start for f in logger.filters):
            logger.addFilter(_Drop(start))
