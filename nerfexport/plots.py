"""Figures for docs/: matplotlib with the non-interactive Agg backend, written atomically."""

from __future__ import annotations

from pathlib import Path

from .fileio import atomic_write


def plot_training_curve(history: list[dict], path: str | Path, title: str = "",
                        final: tuple[float, float] | None = None) -> Path:
    """PSNR on held-out views against training minutes, one point per evaluation.

    ``history``: dicts with ``minutes`` and ``psnr``; ``final``: ``(minutes, psnr)`` of the
    final evaluation at the rendering sample counts, drawn as a separate marker.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    ax.plot([h["minutes"] for h in history], [h["psnr"] for h in history], "o-", label="held-out PSNR (training samples)")
    if final is not None:
        ax.plot([final[0]], [final[1]], "r*", ms=12, label="final, rendering samples")
    ax.axhline(25.0, color="gray", ls="--", lw=1, label="goal 25 dB")
    ax.set_xlabel("training minutes (evaluation excluded)")
    ax.set_ylabel("PSNR [dB]")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    try:
        atomic_write(path, lambda f: fig.savefig(f, format="png"))
    finally:
        plt.close(fig)
    return path
