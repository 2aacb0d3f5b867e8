"""The report's images: overlaid D/G loss curves, metric curves, and the final grids side by side."""

from __future__ import annotations

from pathlib import Path

from ..atomic import atomic_save
from .runs import Run, flatten
from .stats import metric_curve


def plot_losses(runs: list[Run], colors: dict[str, str], path: Path) -> Path | None:
    if not any(r.train for r in runs):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for r in runs:
        if not r.train:
            continue
        steps = [t["step"] for t in r.train]
        for ax, k in zip(axes, ("loss_d", "loss_g")):
            ax.plot(steps, [t.get(k, float("nan")) for t in r.train], color=colors[r.name], lw=1, label=r.name)
    for ax, title in zip(axes, ("D loss", "G loss")):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
    return path


def plot_metrics(runs: list[Run], metrics: list[str], colors: dict[str, str], path: Path) -> Path | None:
    curves = {(r.name, k): metric_curve(r, k) for r in runs for k in metrics}
    keys = [k for k in metrics if any(curves[(r.name, k)] for r in runs)]
    if not keys:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Steps mean different compute when batch sizes differ: then also plot against images seen.
    xs = [("step", "step"), ("elapsed_s", "training time (s, excluding evaluation)")]
    if len({flatten(r.config).get("train.batch_size") for r in runs}) > 1:
        xs.append(("images_seen", "images seen"))
    fig, axes = plt.subplots(len(keys), len(xs), figsize=(5 * len(xs), 3.8 * len(keys)), squeeze=False)
    for row, k in zip(axes, keys):
        for ax, (xk, label) in zip(row, xs):
            for r in runs:
                c = [p for p in curves[(r.name, k)] if p[xk] is not None]
                if c:
                    ax.plot(
                        [p[xk] for p in c],
                        [p["value"] for p in c],
                        marker="o",
                        ms=3,
                        lw=1.2,
                        color=colors[r.name],
                        label=r.name,
                    )
            ax.set_xlabel(label)
            ax.set_ylabel(f"{k.upper()} (lower is better)")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
    return path


def side_by_side(items: list[tuple[str, Path]], path: Path) -> Path | None:
    """The grids in one PNG, each captioned with its run's name (for summary.md)."""
    if not items:
        return None
    from PIL import Image, ImageDraw

    imgs = [(label, Image.open(p).convert("RGB")) for label, p in items]
    gap, cap = 8, 16
    w = sum(im.width for _, im in imgs) + gap * (len(imgs) + 1)
    h = max(im.height for _, im in imgs) + cap + 2 * gap
    canvas = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(canvas)
    x = gap
    for label, im in imgs:
        draw.text((x, gap // 2), label[: max(4, im.width // 6)], fill="black")
        canvas.paste(im, (x, gap + cap))
        x += im.width + gap
    atomic_save(path, lambda tmp: canvas.save(tmp, format="PNG"))
    return path
