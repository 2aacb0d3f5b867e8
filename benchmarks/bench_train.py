"""Training throughput: the project's Trainer step vs a plain fp32 PyTorch DCGAN loop, same process.

    python benchmarks/bench_train.py                        # 64 px, batch 128, 5 repeats of >= 15 s per case
    python benchmarks/bench_train.py --res 64 --batch 32 --repeats 7 --min-repeat-s 8 --options cl_off
    python benchmarks/bench_train.py --preset celeba64-style --batch 32 --options cl_off
    python benchmarks/bench_train.py --options all          # + channels_last off, bf16, compile, 1 thread, fused Adam

Baseline: the reference DCGAN (kernel 5, stride 2, padding 2) written here the way pytorch/examples'
dcgan/main.py trains it: NCHW fp32, nn.Sigmoid at D's end + nn.BCELoss, D(real) and D(fake) each
with their own backward, D(fake) computed again for the G step (with D's weight gradients), Adam
2e-4 (0.5, 0.999), a reused real batch (no data loading at all: flattering to the baseline). With
``--preset`` (a model the examples loop does not train, e.g. the style family) the baseline is the
project's own step with every fast-path piece off (NCHW, fp32, no GEMM route, no CUDA graphs).

Project: the real ``fakefacegen.train.Trainer`` (preset celeba64/celeba128, model.arch=reference, or
``--preset``) on the prepared CelebA when present (else a synthetic prepared dataset), timing
``Trainer._loop`` with ``stop_after``; sample grids and checkpoints are switched off (they are not part
of a step).

Stable on a shared machine: the cases run interleaved, repeat by repeat (A B C, C B A, ...), each
repeat long enough (``--min-repeat-s``: steps are added until the slowest case's repeat takes that long),
and the ratio of the medians is reported with each repeat's own ratio (its pair of cases, adjacent in
time) and the spread of every case, so a load that comes and goes affects both sides alike and shows.
The load average is printed before and after, with a warning when other jobs share the cores.

GFLOP/s counts the convolution/matmul FLOPs of one step (torch.utils.flop_counter at batch 8,
scaled linearly to the batch) and is set against this CPU's fp32 matmul rate (and its bf16 rate where
bf16 is native), re-measured between the cases of every repeat.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import tempfile
import time
from pathlib import Path

import torch  # noqa: E402
from common import (
    count_flops,
    dataset_for,
    header,
    interleaved,
    load_report,
    matmul_peaks,
    median,
    quiet_trainer,
    sync,
    trainer_seconds_per_step,
)
from torch import nn  # noqa: E402

import fakefacegen.train as train_mod  # noqa: E402
from fakefacegen.config import make_config  # noqa: E402
from fakefacegen.data import FaceDataset, to_model_input  # noqa: E402
from fakefacegen.runtime import available_cores, cpu_has_native_bf16, cpu_name  # noqa: E402

BASE = "baseline (examples fp32)"
PROBE = "(matmul rate probe)"
SLOW = {"bf16"}  # emulated on CPUs without native bf16: timed at --slow-batch against auto at that batch
OPTIONS = {
    # name: (config overrides, optimizer keyword patched into train.make_optimizer, description)
    "cl_off": (["train.channels_last='off'"], None, "channels_last off (NCHW), auto precision"),
    "fp32": (["train.precision=fp32"], None, "fp32 + channels_last (what auto picks without native bf16)"),
    "bf16": (["train.precision=bf16"], None, "bf16 autocast + channels_last"),
    "gemm_off": (["train.gemm_convs=off"], None, "auto path without the GEMM route for 4x4 maps (gemm_conv.py)"),
    "compile": (["train.compile=true"], None, "torch.compile (inductor) + auto path"),
    "threads1": (["train.threads=1"], None, "1 thread, auto path"),
    "adam_loop": ([], "loop", "auto path + Adam(foreach=False), the for-loop update"),
    "adam_fused": ([], "fused", "auto path + Adam(fused=True)"),
}


# ---- The baseline: pytorch/examples dcgan, reference kernel layout --------------------------------
class NetG(nn.Module):
    def __init__(self, nz: int, ngf: int, res: int):
        super().__init__()
        n = int(math.log2(res)) - 2
        ch = [ngf * 2 ** (n - 1 - i) for i in range(n)]
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(nz, ch[0], 4, 1, 0, bias=False),
            nn.BatchNorm2d(ch[0]),
            nn.ReLU(True),
        ]
        for a, b in zip(ch[:-1], ch[1:]):
            layers += [nn.ConvTranspose2d(a, b, 5, 2, 2, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(ch[-1], 3, 5, 2, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


class NetD(nn.Module):
    def __init__(self, ndf: int, res: int):
        super().__init__()
        n = int(math.log2(res)) - 2
        ch = [ndf * 2**i for i in range(n)]
        layers: list[nn.Module] = [nn.Conv2d(3, ch[0], 5, 2, 2, bias=False), nn.LeakyReLU(0.2, inplace=True)]
        for a, b in zip(ch[:-1], ch[1:]):
            layers += [nn.Conv2d(a, b, 5, 2, 2, bias=False), nn.BatchNorm2d(b), nn.LeakyReLU(0.2, inplace=True)]
        layers += [nn.Conv2d(ch[-1], 1, 4, 1, 0, bias=False), nn.Sigmoid()]
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).view(-1, 1).squeeze(1)


def weights_init(m: nn.Module) -> None:
    classname = m.__class__.__name__
    if classname.find("Conv") != -1:
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif classname.find("BatchNorm") != -1:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class Baseline:
    """One pytorch/examples-style training step per call, on a reused real batch."""

    def __init__(
        self,
        res: int,
        batch: int,
        real: torch.Tensor,
        nz: int = 100,
        width: int = 64,
        device: torch.device = torch.device("cpu"),
    ):
        torch.manual_seed(0)
        self.netG, self.netD = NetG(nz, width, res), NetD(width, res)
        self.netG.apply(weights_init)
        self.netD.apply(weights_init)
        self.netG.to(device)
        self.netD.to(device)
        self.device = device
        real = real.to(device)
        self.criterion = nn.BCELoss()
        self.optD = torch.optim.Adam(self.netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.optG = torch.optim.Adam(self.netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.real, self.nz, self.batch = real, nz, batch

    def step(self) -> None:
        real_label, fake_label = 1.0, 0.0
        # (1) Update D network: maximize log(D(x)) + log(1 - D(G(z)))
        self.netD.zero_grad()
        label = torch.full((self.batch,), real_label, device=self.device)
        output = self.netD(self.real)
        errD_real = self.criterion(output, label)
        errD_real.backward()
        D_x = output.mean().item()  # noqa: F841 (examples prints it)
        noise = torch.randn(self.batch, self.nz, 1, 1, device=self.device)
        fake = self.netG(noise)
        label.fill_(fake_label)
        output = self.netD(fake.detach())
        errD_fake = self.criterion(output, label)
        errD_fake.backward()
        errD = errD_real + errD_fake  # noqa: F841
        self.optD.step()
        # (2) Update G network: maximize log(D(G(z)))
        self.netG.zero_grad()
        label.fill_(real_label)
        output = self.netD(fake)
        errG = self.criterion(output, label)
        errG.backward()
        self.optG.step()
        _ = errD.item(), errG.item()

    def run(self, steps: int) -> float:
        t0 = time.perf_counter()
        for _ in range(steps):
            self.step()
        sync(self.device)
        return (time.perf_counter() - t0) / steps


# ---- The project's Trainer -----------------------------------------------------------------------
@contextlib.contextmanager
def adam_kw(kind: str | None):
    """Patch train.make_optimizer to use the for-loop ('loop') or fused Adam (same update rule)."""
    if kind is None:
        yield
        return
    orig = train_mod.make_optimizer

    def patched(params, oc):
        if oc.name == "adam":
            return torch.optim.Adam(
                params,
                lr=oc.lr,
                betas=(oc.beta1, oc.beta2),
                weight_decay=oc.weight_decay,
                **({"foreach": False} if kind == "loop" else {kind: True}),
            )
        return orig(params, oc)

    train_mod.make_optimizer = patched
    try:
        yield
    finally:
        train_mod.make_optimizer = orig


def make_trainer(
    res: int,
    batch: int,
    data: Path,
    outdir: Path,
    name: str,
    overrides: list[str],
    adam: str | None = None,
    device: str = "cpu",
    preset: str = "",
) -> train_mod.Trainer:
    """A quiet Trainer for timing: ``preset`` at ``res`` (default: celeba64/celeba128 with the reference DCGAN,
    the examples loop's model), steps never logged, sampled or checkpointed."""
    model = [f"model.resolution={res}"]
    if not preset:
        preset = "celeba64" if res == 64 else "celeba128" if res == 128 else ""
        model.append("model.arch=reference")
    ov = [
        *model,
        f"train.batch_size={batch}",
        "train.steps=1000000000",
        "train.log_every=1000000000",
        "train.sample_every=1000000000",
        "train.ckpt_every=1000000000",
        "eval.every=0",
        *overrides,
    ]
    cfg = make_config(preset or None, ov, data=str(data))
    return quiet_trainer(cfg, outdir, name, device=device, context=adam_kw(adam))


def flat_params(m: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().float().flatten() for p in train_mod._unwrap(m).parameters()])


def update_rel_diff(a: nn.Module, b: nn.Module, w0: torch.Tensor) -> float:
    """||w_a - w_b|| / ||w_a - w0||: how far two runs' generator updates differ, relative to the update."""
    wa, wb = flat_params(a), flat_params(b)
    return float((wa - wb).norm() / (wa - w0).norm().clamp_min(1e-30))


def adam_micro(models: list[nn.Module], repeats: int = 15) -> dict[str, float]:
    """Median seconds of one optimizer.step() over these models' parameters: for-loop, foreach, fused Adam.

    The step's other costs dwarf the optimizer and their noise hides a few percent, so the
    optimizer is also timed on its own, on copies of the parameters with random gradients.
    """
    opts = {}
    for kind in ("default (for-loop)", "foreach", "fused"):
        ps = [p.detach().clone().requires_grad_(True) for m in models for p in m.parameters()]
        for p in ps:
            p.grad = torch.randn_like(p)
        kw = {} if kind.startswith("default") else {kind: True}
        opts[kind] = torch.optim.Adam(ps, lr=2e-4, betas=(0.5, 0.999), **kw)
        opts[kind].step()  # creates the state
    times = interleaved({k: (lambda o=o: o.step()) for k, o in opts.items()}, repeats, verbose=False)
    return {k: median(v) for k, v in times.items()}


PLAIN = ["train.channels_last=off", "train.precision=fp32", "train.gemm_convs=off", "train.cuda_graphs=off"]
"""The project's step with every fast-path piece off: the baseline of a preset the examples loop does not train."""


def bench_resolution(res: int, args: argparse.Namespace, peaks: dict[str, float], tmp: Path) -> None:
    data, what = dataset_for(res, tmp, n=max(2 * args.batch, 256))
    model = args.preset or "reference DCGAN (celeba64/celeba128, model.arch=reference)"
    print(f"\n--- {res}x{res}, batch {args.batch}, {model}; data: {what} ---")
    ds = FaceDataset(data)
    real = to_model_input(ds.__getitems__(list(range(args.batch))), device=torch.device("cpu"), channels_last=False)
    cores = available_cores()

    dev = torch.device(args.device)
    project = make_trainer(res, args.batch, data, tmp, f"auto{res}", [], device=args.device, preset=args.preset)
    w0 = flat_params(project.g)  # every Trainer starts from the same seed, hence the same weights
    n_proj = sum(p.numel() for p in [*project.g.parameters(), *project.d.parameters()])
    base: Baseline | None = None
    base_tr: train_mod.Trainer | None = None
    if args.preset:  # the examples loop trains the reference DCGAN only: the baseline is the project's plain step
        base_name = "baseline (project plain)"
        base_tr = make_trainer(res, args.batch, data, tmp, f"plain{res}", PLAIN, device=args.device, preset=args.preset)
        print(f"models: {n_proj:,} parameters in G+D; baseline: the project's step with {' '.join(PLAIN)}")
        print(f"baseline path: {base_tr.fast.describe()}")
    else:
        base_name = BASE
        base = Baseline(res, args.batch, real, device=dev)
        n_base = sum(p.numel() for p in [*base.netG.parameters(), *base.netD.parameters()])
        assert n_base == n_proj, f"baseline has {n_base} parameters, the project's model {n_proj}: not the same model"
        print(f"models: {n_proj:,} parameters in G+D (same in both)")
    print(f"project path: {project.fast.describe()}")

    # name -> (trainer, batch, name of the case its ratio is taken against)
    trainers: dict[str, tuple[train_mod.Trainer, int, str]] = {"project (auto)": (project, args.batch, base_name)}
    for opt in args.options:
        ov, adam, desc = OPTIONS[opt]
        if opt in SLOW and args.device == "cpu" and not cpu_has_native_bf16():
            # emulated, too slow at the full batch here: compared with auto at a small batch
            sb = args.slow_batch
            ref = f"auto @ batch {sb}"
            if ref not in trainers:
                small_tr = make_trainer(
                    res, sb, data, tmp, f"autosmall{res}", [], device=args.device, preset=args.preset
                )
                trainers[ref] = (small_tr, sb, base_name)
            name = f"{opt} @ batch {sb}"
            trainers[name] = (
                make_trainer(res, sb, data, tmp, f"{opt}{res}", ov, adam, args.device, args.preset),
                sb,
                ref,
            )
        else:
            name = opt
            trainers[name] = (
                make_trainer(res, args.batch, data, tmp, f"{opt}{res}", ov, adam, args.device, args.preset),
                args.batch,
                base_name,
            )
        print(f"option {name}: {desc} -> {trainers[name][0].fast.describe()}")

    # FLOPs of one step at batch 8, per image (conv/matmul FLOPs are linear in the batch).
    small = 8
    tr8 = make_trainer(res, small, data, tmp, f"flops{res}", [], device=args.device, preset=args.preset)
    f_proj = count_flops(lambda: trainer_seconds_per_step(tr8, 1)) / small
    tr8.lock.release()
    if base is not None:
        base8 = Baseline(res, small, real[:small].clone(), device=dev)
        f_base = count_flops(base8.step) / small
    else:
        f_base = f_proj
    print(
        f"conv/matmul FLOPs per step at batch {args.batch}: baseline {f_base * args.batch / 1e9:.1f} GFLOP, "
        f"project {f_proj * args.batch / 1e9:.1f} GFLOP"
        + (" (the project skips D's weight gradients in the G step)" if base is not None else "")
    )

    if any(o.startswith("adam") for o in args.options):
        am = adam_micro([project.g, project.d])
        ref = am["default (for-loop)"]
        print(
            "Adam.step() alone on G+D's parameters (median of 15): "
            + ", ".join(f"{k} {1e3 * v:.1f} ms ({ref / v:.2f}x)" for k, v in am.items())
        )

    def base_case(steps: int) -> float:
        torch.set_num_threads(cores)
        if base is not None:
            return base.run(steps)
        assert base_tr is not None
        return trainer_seconds_per_step(base_tr, steps)

    # Warm-up (first-call allocations, oneDNN primitive creation, torch.compile's compilation), then one
    # timed step of each to size the repeats: at least --min-repeat-s per case, so that a step that the
    # scheduler happens to slow down weighs little in its repeat.
    torch.set_num_threads(cores)
    base_case(args.warmup)
    for name, (tr, _, _) in trainers.items():
        n = args.warmup if name != "compile" else max(args.warmup, 2)
        t0 = time.perf_counter()
        trainer_seconds_per_step(tr, n)
        if name == "compile":
            print(f"torch.compile: the first {n} steps, compilation included, took {time.perf_counter() - t0:.1f} s")
    one = max([base_case(1)] + [trainer_seconds_per_step(tr, 1) for tr, _, _ in trainers.values()])
    steps = max(args.steps, math.ceil(args.min_repeat_s / one))

    probes: dict[str, list[float]] = {"fp32": [], "bf16": []}

    def peak_probe() -> float:
        # The load moves during a run: the matmul rates are re-measured in every repeat, between cases.
        torch.set_num_threads(cores)
        p = matmul_peaks(repeats=1, n=peaks["n_fp32"], device=args.device)
        probes["fp32"].append(p["fp32"])
        probes["bf16"].append(p["bf16"])
        return 0.0

    cases = {base_name: lambda: base_case(steps)}
    for name, (tr, _, _) in trainers.items():
        cases[name] = lambda tr=tr: trainer_seconds_per_step(tr, steps)
    cases[PROBE] = peak_probe
    load0 = load_report("before timing", cores)
    print(
        f"timing: {args.repeats} interleaved repeats of {steps} step(s) per case "
        f"(slowest warm step {one:.2f} s; --min-repeat-s {args.min_repeat_s:g})"
    )
    times = interleaved(cases, args.repeats, unit="s/step")
    load1 = load_report("after timing", cores)
    del times[PROBE]
    peaks = {
        **peaks,
        "fp32": median(probes["fp32"] + [peaks["fp32"]]),
        "bf16": median(probes["bf16"] + [peaks["bf16"]]),
    }
    bf16_col = args.device != "cpu" or cpu_has_native_bf16()  # emulated bf16 is no target to measure against

    med = {name: median(ts) for name, ts in times.items()}
    batch_of = {base_name: args.batch, **{n: b for n, (_, b, _) in trainers.items()}}
    print(f"\nresult {res}x{res} (median s/step; ratio = reference time / time, per image; spread = (max-min)/median):")
    print(
        f"  {'case':<30s} {'batch':>5s} {'s/step':>8s} {'img/s':>8s} {'min-max img/s':>15s} {'spread':>7s} "
        f"{'ratio':>7s} {'per-repeat ratios':>19s} {'vs':<12s} {'GFLOP/s':>8s} {'% fp32 peak':>11s}"
        + (f" {'% bf16 peak':>11s}" if bf16_col else "")
    )
    ratio_range: dict[str, tuple[float, float, float]] = {}
    for name, t in med.items():
        batch = batch_of[name]
        ref = None if name == base_name else trainers[name][2]
        ips = batch / t
        per = [batch / x for x in times[name]]
        spread = 100 * (max(times[name]) - min(times[name])) / t
        gf = (f_base if name == base_name else f_proj) * ips / 1e9
        if ref is None:
            rtxt, rr, vs = "1.00x", "", ""
        else:
            # each repeat's pair, adjacent in time: a load that comes and goes affects both alike
            pairs = [(batch / x) / (batch_of[ref] / y) for x, y in zip(times[name], times[ref])]
            ratio_range[name] = (ips / (batch_of[ref] / med[ref]), min(pairs), max(pairs))
            rtxt, rr = f"{ratio_range[name][0]:.2f}x", f"{min(pairs):.2f}-{max(pairs):.2f}"
            vs = "baseline" if ref == base_name else ref
        print(
            f"  {name:<30s} {batch:5d} {t:8.2f} {ips:8.1f} {min(per):7.1f}-{max(per):<7.1f} {spread:6.0f}% "
            f"{rtxt:>7s} {rr:>19s} {vs:<12s} {gf:8.1f} {100 * gf / peaks['fp32']:10.0f}%"
            + (f" {100 * gf / peaks['bf16']:10.0f}%" if bf16_col else "")
        )
    print(
        f"  (matmul rates, median of the start and each repeat, {args.threads_note}: fp32 {peaks['fp32']:.1f} GFLOP/s"
        + (
            f", bf16 {peaks['bf16']:.1f} GFLOP/s)"
            if bf16_col
            else f"; bf16 {peaks['bf16']:.1f} GFLOP/s is emulated on this CPU, not a rate to aim at)"
        )
    )
    r, lo, hi = ratio_range["project (auto)"]
    print(
        f"HEADLINE {res}px batch {args.batch} {args.preset or 'reference DCGAN'}: project step "
        f"{args.batch / med['project (auto)']:.1f} img/s, {base_name} {args.batch / med[base_name]:.1f} img/s, "
        f"ratio {r:.2f}x (per-repeat {lo:.2f}-{hi:.2f}; {args.repeats} interleaved repeats of {steps} steps; "
        f"load {load0:.1f}->{load1:.1f} on {cores} cores; {cpu_name()}; path: {project.fast.precision}, "
        f"channels_last {'on' if project.fast.channels_last else 'off'}"
        f"{', GEMM route' if project.fast.gemm_max_pixels else ''})"
    )

    # Same maths? Trainers of the same batch ran the same steps from the same seed and batches.
    for name, (tr, batch, ref) in trainers.items():
        other = project if ref == base_name else trainers[ref][0]
        ref_batch = batch_of["project (auto)" if ref == base_name else ref]
        if tr is not other and tr.step == other.step and batch == ref_batch:
            print(
                f"  G after {tr.step} steps, {name} vs {'auto' if ref == base_name else ref}: "
                f"||w - w_auto|| / ||w_auto - w_init|| = {update_rel_diff(tr.g, other.g, w0):.2e}"
            )
    for tr, _, _ in trainers.values():
        tr.lock.release()
    if base_tr is not None:
        base_tr.lock.release()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--res", default="64", help="comma list of resolutions, e.g. 64,128 (default 64)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument(
        "--preset",
        default="",
        help="time this preset's model and recipe (e.g. celeba64-best, celeba64-style) against the project's own step "
        "with every fast-path piece off (default: the reference DCGAN against the pytorch/examples loop)",
    )
    ap.add_argument("--steps", type=int, default=1, help="timed steps per repeat, at least (default 1)")
    ap.add_argument(
        "--min-repeat-s",
        type=float,
        default=15.0,
        help="more steps per repeat until each case's repeat takes about this long (default 15 s)",
    )
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps per case first (default 1)")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved repeats; medians reported (default 5)")
    ap.add_argument(
        "--options",
        default="",
        help=f"comma list of extra variants of the project's step: {', '.join(OPTIONS)}, or 'all'",
    )
    ap.add_argument(
        "--slow-batch",
        type=int,
        default=16,
        help="batch for options too slow for the full batch here (bf16 without native bf16)",
    )
    ap.add_argument(
        "--peak-n",
        type=int,
        default=None,
        help="matmul size for the peak measurement (default 1024 on CPU, 8192 on a GPU)",
    )
    ap.add_argument("--device", default="cpu", help="cpu, cuda or mps: where both sides run (default cpu)")
    args = ap.parse_args(argv)
    if args.peak_n is None:
        args.peak_n = 1024 if args.device == "cpu" else 8192
    args.threads_note = f"{available_cores()} threads" if args.device == "cpu" else args.device
    args.options = list(OPTIONS) if args.options == "all" else [o for o in args.options.split(",") if o]
    for o in args.options:
        if o not in OPTIONS:
            ap.error(f"--options: unknown option {o!r}; choose from {', '.join(OPTIONS)} or all")
    header("bench_train: Trainer step vs plain fp32 pytorch/examples DCGAN loop")
    if args.device.startswith("cuda"):
        print(f"device: {torch.cuda.get_device_name(torch.device(args.device))}")
    peaks = matmul_peaks(n=args.peak_n, device=args.device)
    print(
        f"matmul peak (median of 3): fp32 {peaks['fp32']:.1f} GFLOP/s ({peaks['n_fp32']}^3), "
        f"bf16 {peaks['bf16']:.1f} GFLOP/s ({peaks['n_bf16']}^3)"
    )
    with tempfile.TemporaryDirectory(prefix="bench_train-") as tmp:
        for res in (int(r) for r in args.res.split(",")):
            bench_resolution(res, args, peaks, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
