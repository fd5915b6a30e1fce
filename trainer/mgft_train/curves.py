"""What rank 0 leaves for people to look at: TensorBoard event files under
<output>/tensorboard/ (loss, lr, tokens/s per step) and <output>/loss.png."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TENSORBOARD_DIR = "tensorboard"
LOSS_PNG = "loss.png"


class _Board:
    def __init__(self, writer: Any) -> None:
        self._writer = writer

    def step(self, step: int, loss: float, lr: float, tok_s: float) -> None:
        if self._writer is None:
            return
        self._writer.add_scalar("train/loss", loss, step)
        self._writer.add_scalar("train/lr", lr, step)
        self._writer.add_scalar("train/tokens_per_s", tok_s, step)


@contextmanager
def tensorboard(output: str | Path, *, enabled: bool, start: int = 0) -> Iterator[_Board]:
    """A resumed run (`start` > 0) purges events after its checkpoint: a restarted job's
    repeated steps show once, not twice."""
    if not enabled:
        yield _Board(None)
        return
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(Path(output) / TENSORBOARD_DIR),
                           purge_step=start + 1 if start else None)
    try:
        yield _Board(writer)
    finally:
        writer.close()


def plot_loss(losses: Sequence[float], output: str | Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no display on a cluster node
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(range(1, len(losses) + 1), losses, linewidth=1.5)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    path = Path(output) / LOSS_PNG
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
