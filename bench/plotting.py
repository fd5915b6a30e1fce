"""What the bench reports' charts share: pyplot without a display, saving, and paired bars."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only backend: GPU machines and CI have no display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)


def paired_bars(ax: Any, labels: Sequence[str], first: Sequence[float],
                second: Sequence[float], names: tuple[str, str], ylabel: str, title: str,
                legend: str = "upper left") -> list[float]:
    """Two bars per label, side by side, from 0 to a quarter above the tallest; returns the
    second bars' x positions (to annotate them)."""
    pos = range(len(labels))
    ax.bar([p - 0.2 for p in pos], first, 0.4, label=names[0])
    ax.bar([p + 0.2 for p in pos], second, 0.4, label=names[1])
    ax.set_xticks(list(pos), labels)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, max(*first, *second) * 1.25)
    ax.set_title(title)
    ax.legend(loc=legend)
    return [p + 0.2 for p in pos]
