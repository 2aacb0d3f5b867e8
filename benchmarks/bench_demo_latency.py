"""The demo's worst case for a cheap request: /api/face.png latency while the most expensive allowed
requests (N parallel /api/walk.gif at the largest frames and scale the server accepts) run.

    python benchmarks/bench_demo_latency.py                          # this checkout, 3 and 8 walks
    git archive HEAD~1 src | tar -x -C /tmp/ffg-before               # an older version's package ...
    python benchmarks/bench_demo_latency.py --src /tmp/ffg-before/src --walks 3   # ... measured alike

The server is ``python -m fakefacegen demo [--model] --port 0`` in a subprocess, run from ``--src``
(PYTHONPATH), so two versions are measured by the same client. For each N in --walks it fires N
walk GIFs between distinct faces at once (frames and scale: --frames/--scale, or the most pixels
within the server's per-request limit when it has one), then, until every
walk has answered, asks for one face after another (each a new seed, so none is cached) and records
each face's latency. It prints the idle face latency, then per N: the walks' statuses and times, and
the faces' median and worst latency. Absolute seconds move with the machine's load (see
benchmarks/common.py); the worst-case face latency is the figure to compare.

Measured 2026-12-01, 2 cores (Zen3) at load average 7.3-7.7 (a training job and other tests), the
bundled 64 px model; before = commit 9a3cf68 (one render thread, a queue of 128, median-cut GIFs):

    server  walks  walk size (largest accepted)   walks took       face latency meanwhile
    before  3      frames=64 scale=8 (33.0 Mpx)    148-375 s        worst 374 s (the face waited for all three)
    before  3      frames=33 scale=8 (16.8 Mpx)    86-210 s         worst 210 s
    after   3      frames=33 scale=8 (16.8 Mpx)    2.3-5.9 s        median 46 ms, worst 164 ms (90 faces)
    after   8      frames=33 scale=8 (16.8 Mpx)    1.5-15.6 s       median 61 ms, worst 209 ms (234 faces)

(idle face: 30-86 ms median in these runs.) 64 frames at scale 8 is now a 400 (over MAX_PIXELS).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def get(url: str, timeout: float) -> tuple[int, float, bytes]:
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, time.perf_counter() - t0, r.read()
    except urllib.error.HTTPError as e:
        return e.code, time.perf_counter() - t0, e.read()


class Server:
    """``fakefacegen demo`` from ``src`` in a subprocess, on a free port."""

    def __init__(self, src: Path, model: str | None):
        env = {**os.environ, "PYTHONPATH": str(src), "PYTHONUNBUFFERED": "1"}
        cmd = [sys.executable, "-m", "fakefacegen", "demo", "--port", "0"] + ([model] if model else [])
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.url = None
        t0 = time.monotonic()
        while self.url is None and time.monotonic() - t0 < 120:
            line = self.proc.stdout.readline() if self.proc.stdout else ""
            if not line:
                break
            m = re.search(r"(http://127\.0\.0\.1:\d+)", line)
            self.url = m.group(1) if m else None
        if self.url is None:
            self.stop()
            raise RuntimeError(f"the demo from {src} printed no address")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def largest_walk(url: str, frames: int, scale: int) -> tuple[int, int]:
    """The (frames, scale) at or below the given ones with the most pixels the server accepts: its
    /api/model limits say how many (an older server without ``max_pixels`` takes the given ones)."""
    info = json.loads(get(f"{url}/api/model", 60)[2])
    cap, R = info.get("limits", {}).get("max_pixels"), info["resolution"]
    if cap is None:
        return frames, scale
    best = (0, 0, 0)
    for s in range(scale, 0, -1):
        f = min(frames, (cap // (R * s) ** 2 + 2) // 2)  # a GIF goes there and back: 2f - 2 frames
        if f >= 2:
            best = max(best, ((2 * f - 2) * (R * s) ** 2, f, s))
    return best[1], best[2]


def scenario(url: str, walks: int, frames: int, scale: int, seed0: int, limit: float) -> dict:
    results: list[tuple[int, float]] = []
    done = threading.Event()

    def walk(i: int) -> None:
        q = f"a={seed0 + i}:0&b={seed0 + i}:1&frames={frames}&scale={scale}"
        results.append(get(f"{url}/api/walk.gif?{q}", limit)[:2])

    faces: list[float] = []
    with ThreadPoolExecutor(walks) as ex:
        futs = [ex.submit(walk, i) for i in range(walks)]
        threading.Thread(target=lambda: ([f.result() for f in futs], done.set()), daemon=True).start()
        time.sleep(0.5)  # the walks are in
        k = 0
        t0 = time.monotonic()
        while not done.is_set() and time.monotonic() - t0 < limit:
            status, dt, _ = get(f"{url}/api/face.png?seed={seed0 + 100_000 + k}", limit)
            k += 1
            if status != 200:
                print(f"  face {k}: HTTP {status}")
            faces.append(dt)
        timed_out = not done.is_set()
    return {"walks": results, "faces": faces, "timed_out": timed_out}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", type=Path, default=REPO / "src", help="the package's source tree to serve from")
    ap.add_argument("--model", default=None, help="model to serve (default: the bundled one)")
    ap.add_argument("--walks", default="3,8", help="parallel walk GIFs per scenario (default 3,8)")
    ap.add_argument("--frames", type=int, default=64, help="walk frames to try first (default 64, the range's top)")
    ap.add_argument("--scale", type=int, default=8, help="walk scale to try first (default 8, the range's top)")
    ap.add_argument("--limit", type=float, default=900.0, help="give up on a scenario after this many seconds")
    a = ap.parse_args()
    try:
        la = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        la = "?"
    print(f"== demo latency: /api/face.png while walk GIFs run; server from {a.src} ==")
    print(f"cpu cores: {os.cpu_count()}   load average: {la}")
    srv = Server(a.src, a.model)
    try:
        idle = [get(f"{srv.url}/api/face.png?seed={s}", 60)[1] for s in range(1, 12)][1:]
        print(f"idle face latency: median {statistics.median(idle) * 1000:.0f} ms, max {max(idle) * 1000:.0f} ms")
        frames, scale = largest_walk(srv.url, a.frames, a.scale)
        print(f"largest walk GIF accepted: frames={frames} scale={scale}")
        for i, n in enumerate(int(x) for x in a.walks.split(",")):
            r = scenario(srv.url, n, frames, scale, 1000 * (i + 1), a.limit)
            codes = sorted(s for s, _ in r["walks"])
            times = [t for s, t in r["walks"] if s == 200]
            faces = r["faces"]
            print(
                f"{n} walks: statuses {codes}; "
                + (f"200s took {min(times):.1f}..{max(times):.1f} s; " if times else "")
                + f"{len(faces)} faces meanwhile: median {statistics.median(faces) * 1000:.0f} ms, "
                f"worst {max(faces) * 1000:.0f} ms" + (f"  (stopped after {a.limit:.0f} s)" if r["timed_out"] else "")
            )
            sys.stdout.flush()
    finally:
        srv.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
