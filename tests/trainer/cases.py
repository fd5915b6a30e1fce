"""The trainer flags the end-to-end tests share, so a strategy's proof run is also the
uninterrupted reference its resume test compares against."""

from __future__ import annotations

STEPS = 30
SAVE_EVERY = 10


def flags(strategy: str, tuning: str = "lora", *extra: str) -> tuple[str, ...]:
    return (f"--strategy={strategy}", f"--tuning={tuning}", f"--max-steps={STEPS}",
            # Unpacked batches: several checks recompute the first batch's loss by hand; packing
            # has its own tests (tests/trainer/data).
            f"--save-every={SAVE_EVERY}", "--packing=False", *extra)
