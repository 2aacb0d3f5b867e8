"""Plots of a run's log.jsonl: D/G losses against step, and metric curves."""

from __future__ import annotations

from pathlib import Path

from .atomic import atomic_save
from .rundir import RunDir, read_log


def plot_run(run_dir: str | Path) -> list[Path]:
    """Write losses.png (and metrics.png when metrics were logged) into the run directory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rd = RunDir(run_dir)
    run_dir = rd.path
    recs = read_log(rd.log)
    train = [r for r in recs if r.get("kind") == "train"]
    evals = [r for r in recs if r.get("kind") == "eval"]
    written = []
    if train:
        fig, ax = plt.subplots(figsize=(8, 4))
        steps = [r["step"] for r in train]
        ax.plot(steps, [r["loss_d"] for r in train], label="D loss", lw=1)
        ax.plot(steps, [r["loss_g"] for r in train], label="G loss", lw=1)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title(f"{run_dir.name}: training losses")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        atomic_save(rd.losses_plot, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
        plt.close(fig)
        written.append(rd.losses_plot)
    if evals:
        keys = [k for k in ("fid", "kid") if k in evals[0]]
        fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 4), squeeze=False)
        for ax, k in zip(axes[0], keys):
            ax.plot([r["step"] for r in evals], [r[k] for r in evals], marker="o")
            ax.set_xlabel("step")
            ax.set_ylabel(k.upper())
            ax.grid(alpha=0.3)
        fig.suptitle(f"{run_dir.name}: metrics")
        fig.tight_layout()
        atomic_save(rd.metrics_plot, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
        plt.close(fig)
        written.append(rd.metrics_plot)
    return written
