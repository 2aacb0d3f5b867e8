"""Generation speed: cold CLI time for 64 faces, and images/s for 10,000 vs a naive batch-1 loop.

    python benchmarks/bench_generate.py                    # ~4 min on a loaded 2-core box
    python benchmarks/bench_generate.py --model runs/00001-celeba64 --n 10000 --chunks 5 --cli-repeats 5

Model: --model, else the bundled src/fakefacegen/assets/celeba64.safetensors when installed, else a
generator file with the bundled recipe's architecture (preset celeba64-cpu) and freshly initialised
weights written to a temp dir: the same network, hence the same cost, as the trained one.

(1) Cold CLI: ``fakefacegen generate MODEL --n 64 --out TMP`` as a subprocess (interpreter start,
    imports, loading, sampling, 64 PNGs and grid.png), wall-clock median, interleaved with
    ``python -c "import torch"`` (the floor any PyTorch CLI pays).
(2) In-process throughput: ``load_generator(MODEL).sample`` for --n images (default 10,000) in
    --chunks pieces (``start=`` continues the same image sequence), each chunk interleaved with a
    naive loop that runs G on one noise row at a time (--naive images per chunk); images/s and ratio.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import REPO, header, interleaved, median

from fakefacegen.checkpoint import save_generator  # noqa: E402
from fakefacegen.config import make_config  # noqa: E402
from fakefacegen.generate import bundled_model_path, load_generator, noise  # noqa: E402
from fakefacegen.images import to_uint8  # noqa: E402
from fakefacegen.models import build_models  # noqa: E402


def pick_model(arg: str | None, tmp: Path) -> tuple[Path, str]:
    if arg:
        return Path(arg), "given with --model"
    if bundled_model_path().is_file():
        return bundled_model_path(), "the bundled model"
    cfg = make_config("celeba64-cpu")
    torch.manual_seed(0)
    g, _ = build_models(cfg.model)
    path = tmp / "celeba64-cpu-untrained.safetensors"
    save_generator(g.state_dict(), cfg.to_dict()["model"], path, meta={"note": "untrained, for timing"})
    return path, (
        f"no bundled model installed: the celeba64-cpu architecture (arch {cfg.model.arch}, width "
        f"{cfg.model.width}, {cfg.model.resolution} px) with untrained weights"
    )


def cli_command() -> list[str]:
    exe = shutil.which("fakefacegen", path=str(Path(sys.executable).parent)) or shutil.which("fakefacegen")
    return [exe] if exe else [sys.executable, "-m", "fakefacegen"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="run directory, checkpoint or .safetensors (default: see above)")
    ap.add_argument("--cli-repeats", type=int, default=3, help="cold CLI runs, median reported (default 3)")
    ap.add_argument("--n", type=int, default=10000, help="images for the throughput test (default 10000)")
    ap.add_argument("--chunks", type=int, default=5, help="pieces of --n, each interleaved with the naive loop")
    ap.add_argument("--naive", type=int, default=20, help="images per chunk for the naive batch-1 loop (default 20)")
    ap.add_argument("--batch-size", type=int, default=256, help="sample()'s batch size (default 256, the CLI's)")
    ap.add_argument(
        "--options",
        action="store_true",
        help="also time sample() with channels_last G, batch 64 and 1024, and 1 thread (on 1,000 images)",
    )
    args = ap.parse_args(argv)

    header("bench_generate: CLI cold start and sampling throughput vs a batch-1 loop")
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="bench_generate-") as tmp_s:
        tmp = Path(tmp_s)
        model, what = pick_model(args.model, tmp)
        print(f"model: {model} ({what})")

        # ---- (1) cold CLI ------------------------------------------------------------------------
        cmd = cli_command()
        env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
        runs = {"n": 0}

        def cli() -> None:
            out = tmp / f"faces{runs['n']}"
            runs["n"] += 1
            r = subprocess.run(
                [*cmd, "generate", str(model), "--n", "64", "--out", str(out)], env=env, capture_output=True, text=True
            )
            if r.returncode != 0:
                raise SystemExit(f"fakefacegen generate failed ({r.returncode}): {r.stderr.strip()[-500:]}")
            pngs = list(out.glob("*.png"))
            assert len(pngs) == 65, f"expected 64 faces + grid.png in {out}, found {len(pngs)} files"
            shutil.rmtree(out)

        def floor() -> None:
            subprocess.run([sys.executable, "-c", "import torch"], env=env, check=True)

        print(
            f"cold CLI: {' '.join([Path(cmd[0]).name, *cmd[1:]])} generate MODEL --n 64 --out TMP, "
            f"{args.cli_repeats} interleaved runs"
        )
        ct = interleaved({"fakefacegen generate --n 64": cli, "python -c 'import torch'": floor}, args.cli_repeats)
        t_cli, t_floor = median(ct["fakefacegen generate --n 64"]), median(ct["python -c 'import torch'"])

        # ---- (2) throughput ------------------------------------------------------------------------
        t0 = time.perf_counter()
        G = load_generator(model)
        t_load = time.perf_counter() - t0
        torch.set_num_threads(threads)
        chunk = -(-args.n // args.chunks)
        pos = {"fast": 0, "naive": 0}

        def fast() -> float:
            k = min(chunk, args.n - pos["fast"])
            t = time.perf_counter()
            imgs = G.sample(k, seed=0, start=pos["fast"], batch_size=args.batch_size)
            s = time.perf_counter() - t
            assert imgs.shape == (k, G.resolution, G.resolution, 3) and imgs.dtype == np.uint8
            pos["fast"] += k
            return s / k

        @torch.no_grad()
        def naive() -> float:
            # The obvious loop: one noise vector, one forward pass, one image at a time.
            t = time.perf_counter()
            for _ in range(args.naive):
                z = torch.randn(1, G.z_dim)
                to_uint8(G.net(z))
            s = time.perf_counter() - t
            pos["naive"] += args.naive
            return s / args.naive

        G.sample(8, seed=0)  # warm-up
        naive_warm = args.naive
        args.naive = 4
        naive()
        args.naive = naive_warm
        pos["naive"] = 0
        print(
            f"throughput: {args.n} images from sample() in {args.chunks} chunks (batch {args.batch_size}), "
            f"interleaved with {args.naive} batch-1 images per chunk"
        )
        tt = interleaved({"sample()": fast, "naive batch-1 loop": naive}, args.chunks, unit="s/image")
        assert pos["fast"] == args.n, pos
        t_fast, t_naive = median(tt["sample()"]), median(tt["naive batch-1 loop"])
        t_noise = time.perf_counter()
        noise(1000, G.z_dim, 0)
        t_noise = (time.perf_counter() - t_noise) / 1000

        print(
            f"\nresult ({G.resolution} px, {sum(p.numel() for p in G.net.parameters()):,} parameters in G, "
            f"{threads} threads):"
        )
        print(
            f"  cold CLI, 64 faces + grid     : {t_cli:6.2f} s   (python -c 'import torch': {t_floor:.2f} s; "
            f"load_generator in-process: {t_load:.2f} s)"
        )
        print(
            f"  sample(), {args.n} images      : {1 / t_fast:8.1f} img/s  ({args.n * t_fast:.1f} s in all; "
            f"noise() alone {1e6 * t_noise:.0f} us/image)"
        )
        print(f"  naive batch-1 loop           : {1 / t_naive:8.1f} img/s")
        print(
            f"HEADLINE generate: {1 / t_fast:.1f} img/s vs batch-1 {1 / t_naive:.1f} img/s: ratio "
            f"{t_naive / t_fast:.2f}x; cold CLI 64 faces {t_cli:.2f} s"
        )

        if args.options:
            n_opt = 1000
            base_net = G.net
            cl_net = build_like(G).to(memory_format=torch.channels_last)

            def run(net, bs, th):
                def f() -> float:
                    torch.set_num_threads(th)
                    G.net = net
                    t = time.perf_counter()
                    G.sample(n_opt, seed=1, batch_size=bs)
                    s = time.perf_counter() - t
                    G.net = base_net
                    torch.set_num_threads(threads)
                    return s / n_opt

                return f

            cases = {
                f"batch {args.batch_size} (default)": run(base_net, args.batch_size, threads),
                "channels_last G": run(cl_net, args.batch_size, threads),
                "batch 64": run(base_net, 64, threads),
                "batch 1024": run(base_net, 1024, threads),
                "1 thread": run(base_net, args.batch_size, 1),
            }
            print(f"\noptions: sample({n_opt}) each, 3 interleaved repeats")
            ot = interleaved(cases, 3, unit="s/image")
            ref = median(ot[f"batch {args.batch_size} (default)"])
            for name, ts in ot.items():
                print(f"  {name:<24s} {1 / median(ts):8.1f} img/s  {ref / median(ts):.2f}x")
            torch.set_num_threads(threads)
            G.net = base_net
            a = G.sample(16, seed=3)
            G.net = cl_net
            b = G.sample(16, seed=3)
            G.net = base_net
            print(
                f"  channels_last vs default on 16 images: max |uint8 diff| "
                f"{int(np.abs(a.astype(int) - b.astype(int)).max())}"
            )
    return 0


def build_like(G) -> torch.nn.Module:
    """A copy of G's network (same weights and BatchNorm statistics), in eval mode."""
    import copy

    return copy.deepcopy(G.net).eval()


if __name__ == "__main__":
    sys.exit(main())
