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


def plot_shrink_study(doc: dict, out: str | Path) -> None:
    """PSNR against parameter count for every row of a shrink study (pruned and fine-tuned)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    t = doc["teacher"]
    ax.axhline(t["psnr"], color="k", lw=1, ls="--", label=f"teacher ({t['psnr']:.2f} dB, {t['params'] / 1e6:.2f} M)")
    methods = sorted({r["method"] for r in doc["rows"]})
    cmap = plt.get_cmap("tab10")
    for i, m in enumerate(methods):
        rows = sorted((r for r in doc["rows"] if r["method"] == m), key=lambda r: r["params"])
        xs = [r["params"] / 1e6 for r in rows]
        ax.plot(xs, [r["psnr"] for r in rows], "o-", color=cmap(i), label=m)
        if any(r["psnr_pruned"] is not None for r in rows):
            ax.plot(xs, [r["psnr_pruned"] for r in rows], "x:", color=cmap(i), alpha=0.6)
    ax.set_xscale("log")
    ax.set_xlabel("parameters, coarse + fine [millions] (log)")
    ax.set_ylabel("held-out PSNR [dB]")
    ax.set_title("shrinking the lego teacher: fine-tuned (o) and just pruned (x)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    from .fileio import atomic_write
    atomic_write(out, lambda f: fig.savefig(f, format="png"))
    plt.close(fig)
