"""What the experiment scripts share: running a command, finding a run directory by name, its status."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

EXE = [sys.executable, "-m", "fakefacegen"]


def run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def find_run(outdir: Path, name: str) -> Path | None:
    """The run directory train created for this name (outdir/NNNNN-name), if any."""
    found = sorted(outdir.glob(f"[0-9][0-9][0-9][0-9][0-9]-{name}"))
    return found[-1] if found else None


def status(run_dir: Path | None) -> str:
    """The run's status from run.json ('complete', 'running', ...), '' when there is none."""
    if run_dir is None:
        return ""
    try:
        return json.loads((run_dir / "run.json").read_text()).get("status", "")
    except (OSError, ValueError):
        return ""


def train_or_resume(
    out: Path, name: str, data: str, preset: str, *, budget: int, batch: int, seed: int, sets: list[str]
) -> Path:
    """OUT/NNNNN-NAME trained to ``budget`` images seen: resumed from its last checkpoint when it has one,
    left alone when complete, started otherwise (``sets``: --set overrides)."""
    if budget % batch:
        raise SystemExit(f"the budget {budget} is not a multiple of {name}'s batch size {batch}")
    rd = find_run(out, name)
    if status(rd) != "complete":
        if rd is not None and any((rd / "checkpoints").glob("ckpt-*.pt")):
            run([*EXE, "train", "--resume", str(rd), "--quiet"])
        else:
            cmd = [*EXE, "train", "--data", data, "--preset", preset, "--outdir", str(out), "--name", name]
            cmd += ["--steps", str(budget // batch), "--batch-size", str(batch), "--seed", str(seed), "--quiet"]
            for item in sets:
                cmd += ["--set", item]
            run(cmd)
        rd = find_run(out, name)
    assert rd is not None, f"train wrote no run directory named *-{name} in {out}"
    return rd


def evaluate(rd: Path, data: str, n: int, metrics: str, out: Path, extra: list[str] | None = None) -> None:
    """``fakefacegen evaluate`` of a run into ``out`` (skipped when ``out`` exists)."""
    if not out.exists():
        run(
            [
                *EXE,
                "evaluate",
                str(rd),
                "--data",
                data,
                "--metrics",
                metrics,
                "-n",
                str(n),
                "--out",
                str(out),
                *(extra or []),
            ]
        )


def compare(runs: list[Path], out: Path, title: str) -> None:
    """``fakefacegen compare`` of the runs into ``out``."""
    run([*EXE, "compare", *[str(r) for r in runs], "--out", str(out), "--title", title])
