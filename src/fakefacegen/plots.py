"""Plots of a run's log.jsonl: D/G losses against step, and metric curves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """Records of a log.jsonl; a torn last line (a killed writer) is ignored."""
    out = []
    try:
        with open(path) as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
    except FileNotFoundError:
        pass
    return out


def plot_run(run_dir: str | Path) -> list[Path]:
    """Write losses.png (and metrics.png when metrics were logged) into the run directory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    recs = read_log(run_dir / "log.jsonl")
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
        fig.savefig(run_dir / "losses.png", dpi=100)
        plt.close(fig)
        written.append(run_dir / "losses.png")
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
        fig.savefig(run_dir / "metrics.png", dpi=100)
        plt.close(fig)
        written.append(run_dir / "metrics.png")
    return written
