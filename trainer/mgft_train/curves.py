"""What rank 0 leaves for people to look at: TensorBoard event files under
<output>/tensorboard/ (loss, lr, tokens/s per step; the held-out eval loss where it was
measured) and <output>/loss.png (training loss per step, and the eval loss's points)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
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

    def eval(self, step: int, loss: float) -> None:
        if self._writer is not None:
            self._writer.add_scalar("eval/loss", loss, step)


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


def plot_loss(losses: Sequence[float], output: str | Path, title: str,
              evals: Sequence[Mapping[str, float]] = ()) -> Path:
    """`evals`: the held-out eval points ({"step", "loss"}), drawn as a second curve."""
    from matplotlib import pyplot as plt

    fig = loss_figure(losses, title, evals)
    path = Path(output) / LOSS_PNG
    fig.savefig(path)
    plt.close(fig)
    return path


def loss_figure(losses: Sequence[float], title: str,
                evals: Sequence[Mapping[str, float]] = ()) -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display on a cluster node
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(range(1, len(losses) + 1), losses, linewidth=1.5, label="training")
    if evals:
        ax.plot([p["step"] for p in evals], [p["loss"] for p in evals], marker="o",
                linewidth=1.5, label="held-out eval")
        ax.legend()
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss per predicted token")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
