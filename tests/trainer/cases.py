"""The trainer flags the end-to-end tests share, so a strategy's proof run is also the
uninterrupted reference its resume test compares against."""

from __future__ import annotations

STEPS = 30
SAVE_EVERY = 10


def flags(strategy: str, tuning: str = "lora", *extra: str) -> tuple[str, ...]:
    return (f"--strategy={strategy}", f"--tuning={tuning}", f"--max-steps={STEPS}",
            f"--save-every={SAVE_EVERY}", *extra)
