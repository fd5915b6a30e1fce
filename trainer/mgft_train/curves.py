"""What rank 0 leaves for people to look at at the end: <output>/loss.png (training loss per
step, and the eval loss's points). Per-step trackers (TensorBoard, W&B, MLflow) are in
mgft_train.tracking."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

LOSS_PNG = "loss.png"


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
