"""The one prepared GPU check of train.cuda_graphs (step_capture.py): speed, loss equality, resume exactness.

    pip install torch==2.13.0 -e . && python scripts/gpu_check.py        # results in $OUT (else ./gpu_check-out)

Needs one CUDA GPU, nothing from the internet beyond the line above (the data are synthetic, made here), and
about 5-7 minutes on one H200; ``--budget-s`` (default 420) skips the remaining speed cases once spent and the
results are written after every case, so a run cut short still leaves its JSON. What it measures:

1. Speed: img/s of the real Trainer step (its data, flips, noise, DiffAugment, EMA, the per-step sync) with
   ``train.cuda_graphs=off`` (plain) and ``on`` (captured), interleaved repeats, medians, at 64 and 128 px
   and batch 64/128/256, for three models: the benchmark's reference DCGAN (preset celeba64/celeba128 with
   model.arch=reference, also against the pytorch/examples fp32 loop of benchmarks/bench_train.py: the
   "plain loop" of issue 20), the DCGAN recipe celeba64-best and the style family celeba64-style (lazy R1
   every 16 steps: its second graph). Each case's peak GPU memory (allocated, above what was allocated
   before it was built) and how many graphs were captured.
2. Loss equality: the per-step statistics of 40 steps captured vs plain from one seed (bf16, the default),
   against the run-to-run noise of two plain runs, for the DCGAN recipe and the style family; and the same in
   fp32 for the DCGAN recipe.
3. Resume exactness (a subprocess with deterministic algorithms, cuDNN autotuning off): 30 steps straight vs
   15 + a resume from the checkpoint to 30, graphs on and (as the control) off; the weights, EMA and Adam
   state compared bit for bit (max abs difference given either way).
4. torch.compile (train.compile=true, graphs then off), if time is left: img/s or the first line of its error.

Output: ``gpu_check.json`` (everything) and ``gpu_check.log`` (this output) in $OUT; ``HEADLINE`` lines say
the ratios. benchmarks/README.md says what was measured where.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))  # common.py (timing, quiet_trainer), bench_train.py (the examples loop)
sys.path.insert(0, str(REPO / "tests"))  # synthetic_faces: the synthetic datasets


class Settings:
    """The sizes of the check; ``--smoke`` shrinks them and runs on the CPU with the 'static' mode in place of
    'on' (the script's own test where there is no GPU: every part runs, the figures mean nothing)."""

    def __init__(self, smoke: bool):
        self.smoke = smoke
        self.device = "cpu" if smoke else "cuda"
        self.captured = "static" if smoke else "on"
        self.cases = [(32, 8)] if smoke else [(64, 128), (64, 64), (64, 256), (128, 128), (128, 64), (128, 256)]
        self.eq = (32, 8, 6) if smoke else (64, 64, 40)  # resolution, batch, steps
        self.resume = (32, 8) if smoke else (64, 32)
        self.repeat_s = 0.05 if smoke else 0.6
        self.repeats = 2 if smoke else 3


S = Settings(False)

FAMILIES = {
    # name: (preset at 64 px or None for celeba64/celeba128, extra overrides, what it is)
    "dcgan-reference": (None, ["model.arch=reference"], "the benchmark's model: reference DCGAN, kernel 5"),
    "dcgan-best": ("celeba64-best", [], "celeba64-best: kernel-4 DCGAN, EMA, DiffAugment color+translation"),
    "style": ("celeba64-style", [], "celeba64-style: StyleGAN2-like G, residual D, lazy R1 every 16, EMA, DiffAugment"),
}
NEVER = "1000000000"


class Tee:
    def __init__(self, path: Path):
        self.f = path.open("a")

    def __call__(self, *a: object) -> None:
        text = " ".join(str(x) for x in a)
        print(text, flush=True)
        self.f.write(text + "\n")
        self.f.flush()


def overrides(family: str, res: int, batch: int, graphs: str, extra: list[str] = ()) -> tuple[str, list[str]]:
    preset, ov, _ = FAMILIES[family]
    preset = preset or ("celeba64" if res == 64 else "celeba128")
    return preset, [
        f"model.resolution={res}",
        *ov,
        f"train.batch_size={batch}",
        f"train.steps={NEVER}",
        f"train.log_every={NEVER}",
        f"train.sample_every={NEVER}",
        f"train.ckpt_every={NEVER}",
        "eval.every=0",
        f"train.cuda_graphs={graphs}",
        *extra,
    ]


def free_gpu() -> None:
    import torch

    gc.collect()
    if S.device == "cuda":
        torch.cuda.empty_cache()


def allocated() -> int:
    import torch

    return torch.cuda.memory_allocated() if S.device == "cuda" else 0


def peak() -> int:
    import torch

    return torch.cuda.max_memory_allocated() if S.device == "cuda" else 0


def reset_peak() -> None:
    import torch

    if S.device == "cuda":
        torch.cuda.reset_peak_memory_stats()


# ---- 1. speed ---------------------------------------------------------------------------------------------
def speed_case(family, res, batch, data, tmp, log):
    import torch
    from bench_train import Baseline
    from common import interleaved, median, quiet_trainer, trainer_seconds_per_step

    from fakefacegen.config import make_config
    from fakefacegen.data import FaceDataset, to_model_input
    from fakefacegen.step_capture import WARMUP_STEPS

    dev = torch.device(S.device)
    trainers, mem = {}, {}
    for mode, graphs in (("plain", "off"), ("captured", S.captured)):
        preset, ov = overrides(family, res, batch, graphs)
        cfg = make_config(preset, ov, data=str(data))
        before = allocated()
        reset_peak()
        tr = quiet_trainer(cfg, tmp, f"{family}-{res}-{batch}-{mode}", device=S.device)
        t = cfg.train
        reg = t.r1_gamma > 0 or t.r2_gamma > 0
        warm = (WARMUP_STEPS + 1) * t.r1_every + 2 if reg else WARMUP_STEPS + 4
        warm = min(warm, 6) if S.smoke else warm
        t0 = time.perf_counter()
        trainer_seconds_per_step(tr, warm)
        mem[mode] = (peak() - before) / 2**20
        trainers[mode] = tr
        log(f"  {mode}: warm-up {warm} steps {time.perf_counter() - t0:.1f} s, peak +{mem[mode]:.0f} MiB")
    # steps per repeat: a multiple of r1_every (the regularised steps in their share), at least min_repeat_s
    t = trainers["plain"].cfg.train
    unit = t.r1_every if (t.r1_gamma > 0 or t.r2_gamma > 0) else 8
    per = trainer_seconds_per_step(trainers["captured"], unit)
    steps = max(2 * unit, min(40 * unit, unit * int(S.repeat_s / max(per * unit, 1e-6) + 1)))
    steps = 2 if S.smoke else steps
    cases = {m: (lambda tr=tr: trainer_seconds_per_step(tr, steps)) for m, tr in trainers.items()}
    base = None
    if family == "dcgan-reference":
        ds = FaceDataset(data)
        real = to_model_input(ds.__getitems__(list(range(batch))), device=dev, channels_last=False)
        before = allocated()
        reset_peak()
        base = Baseline(res, batch, real, device=dev)
        base.run(1 if S.smoke else 5)
        mem["examples"] = (peak() - before) / 2**20
        cases["examples"] = lambda b=base: b.run(steps)
    times = interleaved(cases, S.repeats, verbose=False)
    out = []
    plain_ips = batch / median(times["plain"])
    examples_ips = batch / median(times["examples"]) if "examples" in times else None
    for mode, ts in times.items():
        ips = batch / median(ts)
        row = {
            "family": family,
            "res": res,
            "batch": batch,
            "mode": mode,
            "img_s": round(ips, 1),
            "img_s_repeats": [round(batch / x, 1) for x in ts],
            "spread_pct": round(100 * (max(ts) - min(ts)) / median(ts), 1),
            "steps_per_repeat": steps,
            "vs_plain": round(ips / plain_ips, 3),
            "vs_examples": round(ips / examples_ips, 3) if examples_ips else None,
            "peak_mem_mib": round(mem[mode], 1),
            "graphs": getattr(trainers[mode].run_step, "graphs", 0) if mode in trainers else None,
        }
        out.append(row)
        log(
            f"  {family:16s} {res:4d}px b{batch:<4d} {mode:9s} {ips:9.1f} img/s  x{row['vs_plain']:.2f} plain"
            + (f"  x{row['vs_examples']:.2f} examples" if row["vs_examples"] else "")
            + f"  spread {row['spread_pct']}%  mem +{row['peak_mem_mib']:.0f} MiB  graphs {row['graphs']}"
        )
    for tr in trainers.values():
        tr.lock.release()
    del trainers, cases
    free_gpu()
    return out


# ---- 2. loss equality ---------------------------------------------------------------------------------------
def stats_run(family, res, batch, graphs, data, tmp, name, steps, extra=()):
    import torch
    from common import quiet_trainer, trainer_seconds_per_step

    from fakefacegen.config import make_config

    preset, ov = overrides(family, res, batch, graphs, list(extra))
    tr = quiet_trainer(make_config(preset, ov, data=str(data)), tmp, name, device=S.device)
    seen = []
    inner = tr.run_step

    def recording(inputs):
        s = inner(inputs)
        seen.append(s.detach().clone())
        return s

    tr.run_step = recording
    trainer_seconds_per_step(tr, steps)
    w = torch.cat([p.detach().float().flatten() for p in tr.g_net.parameters()])
    tr.lock.release()
    return torch.stack(seen).cpu(), w.cpu()


def loss_equality(family, data, tmp, log, extra=(), label=""):
    res_, batch, steps = S.eq
    runs = {}
    for name, graphs in (("plain", "off"), ("plain_again", "off"), ("captured", S.captured)):
        runs[name] = stats_run(family, res_, batch, graphs, data, tmp, f"eq-{family}{label}-{name}", steps, extra)
        free_gpu()
    names = ("loss_d", "loss_g", "d_real", "d_fake", "r1", "r2")

    def diff(a, b):
        sa, sb = runs[a][0][:, :6], runs[b][0][:, :6]
        rel = ((sa - sb).abs() / sb.abs().clamp_min(1e-3)).max(0).values
        first10 = ((sa[:10] - sb[:10]).abs() / sb[:10].abs().clamp_min(1e-3)).max().item()
        wa, wb = runs[a][1], runs[b][1]
        return {
            "max_rel_diff_per_stat": {n: round(float(v), 6) for n, v in zip(names, rel)},
            "max_rel_diff_first10": round(first10, 6),
            "first_step_bitwise_equal": bool(torch_equal(sa[0], sb[0])),
            "G_rel_diff_after": round(float((wa - wb).norm() / wb.norm()), 8),
        }

    res = {
        "family": family + label,
        "steps": steps,
        "captured_vs_plain": diff("captured", "plain"),
        "plain_vs_plain_again (noise floor)": diff("plain_again", "plain"),
        "loss_d_plain": [round(float(x), 5) for x in runs["plain"][0][:, 0]],
        "loss_d_captured": [round(float(x), 5) for x in runs["captured"][0][:, 0]],
    }
    cap, floor = res["captured_vs_plain"], res["plain_vs_plain_again (noise floor)"]
    log(
        f"  {family}{label}: captured vs plain max rel diff {cap['max_rel_diff_first10']:.2e} (first 10 steps), "
        f"G after {steps} steps {cap['G_rel_diff_after']:.2e}; plain vs plain {floor['max_rel_diff_first10']:.2e}, "
        f"{floor['G_rel_diff_after']:.2e}"
    )
    return res


def torch_equal(a, b) -> bool:
    import torch

    return torch.equal(a, b)


# ---- 3. resume exactness (subprocess: deterministic settings must be made before CUDA starts) ---------------
def resume_check(out: Path) -> None:
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    import torch

    torch.use_deterministic_algorithms(True, warn_only=True)
    import fakefacegen.step_capture as sc
    from fakefacegen.checkpoint import list_checkpoints, load_checkpoint
    from fakefacegen.config import make_config
    from fakefacegen.train import Trainer
    from synthetic_faces import make_dataset_dir

    sc.WARMUP_STEPS = 2  # both graphs captured inside 15 steps (R1 every 3)
    tmp = Path(tempfile.mkdtemp(prefix="gpu_check_resume-"))
    res, batch = S.resume
    data = make_dataset_dir(tmp / "ds", n=512, size=res)
    results = []

    def built(**kw):
        tr = Trainer(progress=False, device=S.device, **kw) if "cfg" in kw else Trainer(progress=False, **kw)
        torch.backends.cudnn.benchmark = False  # the Trainer turns autotuning on; off here for repeatability
        torch.backends.cudnn.deterministic = True
        return tr

    for family in ("dcgan-best", "style"):
        for graphs in (S.captured, "off"):
            preset, _ = overrides(family, res, batch, graphs)
            ov = [
                f"model.resolution={res}",
                f"train.batch_size={batch}",
                "train.steps=30",
                "train.ckpt_every=15",
                "train.log_every=1",
                "train.sample_every=1000",
                "train.r1_every=3",
                f"train.cuda_graphs={graphs}",
            ]
            if family == "dcgan-best":
                ov += ["train.ema_start=5", "train.r1_gamma=0.05"]
            cfg = make_config(preset, ov, data=str(data))
            row = {"family": family, "cuda_graphs": graphs}
            try:
                full = built(cfg=cfg, outdir=tmp / f"{family}-{graphs}-a").run()
                part = built(cfg=cfg, outdir=tmp / f"{family}-{graphs}-b", stop_after=15).run()
                ck = list_checkpoints(part)[-1]
                state = load_checkpoint(ck)
                resumed = built(resume=part, device=S.device)
                loaded_equal = all(
                    torch.equal(v.cpu(), state["G"][k]) for k, v in resumed.g_net.state_dict().items()
                ) and all(torch.equal(v.cpu(), state["D"][k]) for k, v in resumed.d_net.state_dict().items())
                row["graphs_after_resume"] = getattr(resumed.run_step, "graphs", None)
                resumed.run()
                a, b = load_checkpoint(list_checkpoints(full)[-1]), load_checkpoint(list_checkpoints(part)[-1])
                diffs = {}
                for key in ("G", "D", "G_ema"):
                    for name, t in (a[key] or {}).items():
                        if t.is_floating_point():
                            diffs[f"{key}.{name}"] = float((t.float() - b[key][name].float()).abs().max())
                for key in ("opt_G", "opt_D"):
                    for i, st in a[key]["state"].items():
                        for n in ("exp_avg", "exp_avg_sq", "step"):
                            diffs[f"{key}.{i}.{n}"] = float(
                                (st[n].float().cpu() - b[key]["state"][i][n].float().cpu()).abs().max()
                            )
                la = [json.loads(x) for x in (full / "log.jsonl").read_text().splitlines() if '"train"' in x]
                lb = [json.loads(x) for x in (part / "log.jsonl").read_text().splitlines() if '"train"' in x]
                row.update(
                    {
                        "steps": [a["step"], b["step"]],
                        "loaded_state_equals_checkpoint": loaded_equal,
                        "bitwise_equal": all(v == 0 for v in diffs.values()),
                        "max_abs_diff": max(diffs.values()),
                        "worst": max(diffs, key=diffs.get),
                        "loss_d_equal_steps": sum(x["loss_d"] == y["loss_d"] for x, y in zip(la, lb)),
                        "log_steps": [len(la), len(lb)],
                    }
                )
            except Exception as e:  # recorded, the other cases still run
                row["error"] = "".join(traceback.format_exception_only(type(e), e)).strip()[-600:]
            results.append(row)
            print(json.dumps(row), flush=True)
    (out / "resume.json").write_text(json.dumps(results, indent=2))


def compile_check(out: Path) -> None:
    from common import quiet_trainer, trainer_seconds_per_step

    from fakefacegen.config import make_config
    from synthetic_faces import make_dataset_dir

    tmp = Path(tempfile.mkdtemp(prefix="gpu_check_compile-"))
    res, batch = (32, 8) if S.smoke else (64, 128)
    data = make_dataset_dir(tmp / "ds", n=512, size=res)
    row = {"case": f"dcgan-reference {res}px batch {batch}, train.compile=true"}
    try:
        preset, ov = overrides("dcgan-reference", res, batch, "auto", ["train.compile=true"])
        tr = quiet_trainer(make_config(preset, ov, data=str(data)), tmp, "compile", device=S.device)
        t0 = time.perf_counter()
        trainer_seconds_per_step(tr, 3)
        row["first_3_steps_s"] = round(time.perf_counter() - t0, 1)
        row["img_s"] = round(batch / min(trainer_seconds_per_step(tr, 2 if S.smoke else 20) for _ in range(3)), 1)
        row["cuda_graphs"] = tr.fast.cuda_graphs
    except Exception as e:
        row["error"] = "".join(traceback.format_exception_only(type(e), e)).strip()[-600:]
    (out / "compile.json").write_text(json.dumps(row, indent=2))
    print(json.dumps(row), flush=True)


# ---- the whole check -------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("OUT") or "gpu_check-out", help="results folder (default $OUT)")
    ap.add_argument(
        "--budget-s", type=float, default=420, help="skip the remaining speed cases after this (default 420)"
    )
    ap.add_argument("--part", choices=["all", "resume", "compile"], default="all", help=argparse.SUPPRESS)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU, 'static' for 'on': tests this script")
    ap.add_argument("--skip-compile", action="store_true", help="leave out the torch.compile attempt")
    args = ap.parse_args(argv)
    global S
    S = Settings(args.smoke)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.part == "resume":
        resume_check(out)
        return 0
    if args.part == "compile":
        compile_check(out)
        return 0

    t_start = time.perf_counter()
    log = Tee(out / "gpu_check.log")
    import torch

    report: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "errors": []}
    path = out / "gpu_check.json"

    def save() -> None:
        report["elapsed_s"] = round(time.perf_counter() - t_start, 1)
        path.write_text(json.dumps(report, indent=2))

    if S.device == "cuda" and not torch.cuda.is_available():
        log("error: no CUDA device visible; this check needs one GPU")
        report["errors"].append("no CUDA device")
        save()
        return 1
    from common import header, matmul_peaks

    import fakefacegen
    from synthetic_faces import make_dataset_dir

    header("gpu_check: train.cuda_graphs on one GPU")
    report["machine"] = {"torch": torch.__version__, "fakefacegen": getattr(fakefacegen, "__version__", "?")}
    if S.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        report["machine"].update(
            gpu=torch.cuda.get_device_name(0),
            memory_gib=round(props.total_memory / 2**30, 1),
            capability=f"{props.major}.{props.minor}",
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
        )
    log(json.dumps(report["machine"]))
    peaks = matmul_peaks(n=256 if S.smoke else 8192, device=S.device)  # before any Trainer allows TF32
    report["matmul_tflops"] = {"fp32_tf32_off": round(peaks["fp32"] / 1e3, 1), "bf16": round(peaks["bf16"] / 1e3, 1)}
    tmp = Path(tempfile.mkdtemp(prefix="gpu_check-"))
    sizes = sorted({r for r, _ in S.cases} | {S.eq[0]})
    data = {r: make_dataset_dir(tmp / f"ds{r}", n=64 if S.smoke else 1024, size=r) for r in sizes}
    save()

    # 1. speed: the headline case first, then the rest while the budget lasts
    report["speed"] = []
    for res, batch in S.cases:
        for family in FAMILIES:
            if time.perf_counter() - t_start > args.budget_s:
                report["errors"].append(f"skipped (budget): {family} {res}px batch {batch}")
                continue
            try:
                report["speed"] += speed_case(family, res, batch, data[res], tmp, log)
            except Exception as e:
                msg = "".join(traceback.format_exception_only(type(e), e)).strip()[-600:]
                report["errors"].append(f"speed {family} {res}px batch {batch}: {msg}")
                log(f"  ERROR {family} {res}px batch {batch}: {msg}")
                free_gpu()
            save()
    for row in report["speed"]:
        if row["mode"] == "captured":
            ex = None
            if row["family"] == "dcgan-reference":  # the examples loop trains this model only
                same = [r for r in report["speed"] if (r["res"], r["batch"]) == (row["res"], row["batch"])]
                ex = next((r for r in same if r["mode"] == "examples"), None)
            log(
                f"HEADLINE {row['res']}px batch {row['batch']} {row['family']}: captured {row['img_s']} img/s, "
                f"x{row['vs_plain']:.2f} the plain Trainer step"
                + (f", x{row['img_s'] / ex['img_s']:.2f} the pytorch/examples fp32 loop" if ex else "")
            )

    # 2. loss equality
    report["loss_equality"] = []
    eq_cases = (
        ("dcgan-best", (), ""),
        ("style", ("train.r1_every=4",), " (R1 every 4: both graphs)"),
        ("dcgan-best", ("train.precision=fp32",), " fp32"),
    )
    for family, extra, label in eq_cases:
        try:
            report["loss_equality"].append(loss_equality(family, data[S.eq[0]], tmp, log, extra=extra, label=label))
        except Exception as e:
            msg = "".join(traceback.format_exception_only(type(e), e)).strip()[-600:]
            report["errors"].append(f"loss equality {family}{label}: {msg}")
            log(f"  ERROR loss equality {family}{label}: {msg}")
        free_gpu()
        save()

    # 3. resume exactness, 4. torch.compile: each in its own process
    for part, limit in (("resume", 3000 if S.smoke else 240), ("compile", 150)):
        if part == "compile" and args.skip_compile:
            continue
        left = (t_start + (7200 if S.smoke else 470)) - time.perf_counter()
        if left < 60:
            report["errors"].append(f"skipped (time): {part}")
            continue
        try:
            p = subprocess.run(
                [sys.executable, __file__, "--part", part, "--out", str(out), *(["--smoke"] if S.smoke else [])],
                capture_output=True,
                text=True,
                timeout=min(limit, left - 10),
                env={**os.environ, "CUBLAS_WORKSPACE_CONFIG": ":4096:8"} if part == "resume" else None,
            )
            log(p.stdout[-4000:])
            if p.returncode:
                report["errors"].append(f"{part}: exit {p.returncode}: {p.stderr.strip()[-600:]}")
            f = out / f"{part}.json"
            report[part] = json.loads(f.read_text()) if f.is_file() else None
        except subprocess.TimeoutExpired:
            report["errors"].append(f"{part}: timed out")
        save()
    for row in report.get("resume") or []:
        log(
            f"HEADLINE resume {row['family']} cuda_graphs={row['cuda_graphs']}: "
            + (
                f"error {row['error']}"
                if "error" in row
                else f"bitwise {row['bitwise_equal']}, max abs diff {row['max_abs_diff']:.3g}"
            )
        )
    save()
    log(f"done in {time.perf_counter() - t_start:.0f} s; {len(report['errors'])} error(s); {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
