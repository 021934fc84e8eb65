"""Figures for docs/ (training curves, shrink studies, bench results): matplotlib, an optional extra
imported only when a figure is drawn, with the non-interactive Agg backend, written atomically."""

from __future__ import annotations

from pathlib import Path

from nerfexport.data.fileio import atomic_write


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
    from nerfexport.data.fileio import atomic_write
    atomic_write(out, lambda f: fig.savefig(f, format="png"))
    plt.close(fig)


def plot_pareto(doc: dict, out: str | Path) -> None:
    """Quality (PSNR) against median frame time for every benchmarked configuration."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in doc["rows"] if "error" not in r]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    pts = sorted((r["median_ms"], r["psnr"], f"{r['label']} ({r['runtime']})") for r in rows)
    front, best = [], -1e9
    for t, p, _ in pts:
        if p > best:
            front.append((t, p))
            best = p
    ax.plot([t for t, _ in front], [p for _, p in front], "-", color="0.6", lw=1, label="Pareto front")
    for i, (t, p, lab) in enumerate(pts):
        ax.plot(t, p, "o")
        # alternate above and below, so that neighbours with the same quality stay readable
        ax.annotate(lab, (t, p), fontsize=6, xytext=(3, 4 if i % 2 == 0 else -9), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel(f"median frame time [ms] (log), {doc['machine']}")
    ax.set_ylabel("PSNR vs ground truth [dB]")
    ax.set_title(f"{doc['W']}x{doc['H']}, {doc['views']} held-out views")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(out, lambda f: fig.savefig(f, format="png"))
    plt.close(fig)


def plot_bench_grid(doc: dict, gt: "np.ndarray", out: str | Path, view: int = 0) -> None:
    """Ground truth, then each configuration's render of one view with its error heatmap below."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = [r for r in doc["rows"] if "error" not in r]
    n = len(rows) + 1
    fig, axes = plt.subplots(2, n, figsize=(2.0 * n, 4.2), dpi=120, squeeze=False)
    axes[0, 0].imshow(np.clip(gt, 0, 1))
    axes[0, 0].set_title("ground truth", fontsize=7)
    axes[1, 0].axis("off")
    for k, r in enumerate(rows, start=1):
        img = np.load(r["renders"])[view]
        err = np.abs(img - gt).mean(-1)
        axes[0, k].imshow(np.clip(img, 0, 1))
        axes[0, k].set_title(f"{r['label']} ({r['runtime']})\n{r['psnr']:.2f} dB, {r['median_ms']:.0f} ms", fontsize=6)
        axes[1, k].imshow(err, cmap="inferno", vmin=0, vmax=0.3)
        axes[1, k].set_title("|error|", fontsize=6)
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    atomic_write(out, lambda f: fig.savefig(f, format="png"))
    plt.close(fig)
