"""``fakefacegen demo``: a face generator in the browser (needs ``pip install 'fakefacegen[demo]'``)."""

from __future__ import annotations

import argparse
import sys
import time

from .. import bounds
from ..bounds import flag, helped
from ..demo import DEFAULT_PORT, DemoError, need_extra
from .flags import add_device, add_model, add_which, device_of, subcommand

EXAMPLES = """examples:
  fakefacegen demo                                  # bundled model, serves http://127.0.0.1:7860
  fakefacegen demo runs/00003-celeba64              # any run directory or checkpoint, 64 or 128 px
  fakefacegen demo model.safetensors --host 0.0.0.0 --port 8080   # reachable from other machines
  fakefacegen demo --host 0.0.0.0 --allow-host studio.local       # ... and opened as http://studio.local:8000"""


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    s = subcommand(
        sub,
        "demo",
        "A face generator in the browser: grid, truncation slider, walks between faces, PNG downloads.",
        EXAMPLES,
    )
    add_model(s)
    s.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 for all)",
    )
    s.add_argument(
        "--port",
        type=flag(bounds.PORT),
        default=DEFAULT_PORT,
        help=helped("port (0 = any free port)", bounds.PORT, DEFAULT_PORT),
    )
    add_which(s)
    add_device(s)
    s.add_argument(
        "--threads",
        type=flag(bounds.THREADS),
        default=None,
        help=helped("CPU threads for the generator", bounds.THREADS, None)
        + " (default: torch's choice; 1 is best on a busy machine)",
    )
    s.add_argument(
        "--cache-mb",
        type=flag(bounds.CACHE_MB),
        default=64,
        help=helped("memory for rendered images, in MB", bounds.CACHE_MB, 64),
    )
    s.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name the page may be opened by, besides localhost and the --host address (repeatable; "
        "e.g. the machine's LAN name with --host 0.0.0.0). Other Host headers get 421, against DNS rebinding",
    )
    s.add_argument(
        "--directions",
        default=None,
        help="attribute directions file for the edit sliders; a file that is missing or made for other weights "
        "is an error (default: NAME-directions.json next to the model if it fits, else a page without sliders)",
    )
    s.add_argument("--log", action="store_true", help="log every request")
    s.set_defaults(func=run)
    return s


def run(args: argparse.Namespace) -> int:
    """Load the model once, print the address, serve until Ctrl+C."""
    # From the command line argparse has checked these against bounds; this is for direct callers.
    if not bounds.PORT.contains(args.port):
        raise DemoError(f"--port must be {bounds.PORT.short()}, got {args.port}")
    if not bounds.CACHE_MB.contains(args.cache_mb):
        raise DemoError(f"--cache-mb must be {bounds.CACHE_MB.short()}, got {args.cache_mb}")
    if args.threads is not None and args.threads < 1:
        raise DemoError(f"--threads must be >= 1, got {args.threads}")
    need_extra()
    device = device_of(args)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from ..demo.server import bind, create_app, serve, url_of
    from ..generate import load_generator

    t0 = time.perf_counter()
    G = load_generator(args.model, device=device, which=args.which)
    directions = getattr(args, "directions", None)  # direct callers may pass a Namespace without it
    if directions is not None:  # named on the command line: a file that does not fit is an error, not "no sliders"
        from ..directions import DirectionsError

        try:
            G.directions(directions)
        except DirectionsError as e:
            raise DemoError(f"--directions: {str(e).strip().splitlines()[0]}") from None
    app = create_app(
        G,
        cache_bytes=args.cache_mb << 20,
        allowed_hosts=args.allow_host,
        directions=directions,
    )
    sock = bind(args.host, args.port)  # before printing: a busy port is an error, not a dead link
    info = app.state.info
    print(f"loaded {info['name']} ({G.resolution}px) in {time.perf_counter() - t0:.1f}s", flush=True)
    print(f"FakeFaceGen demo at {url_of(sock)}  (Ctrl+C to stop)", flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"note: listening on {args.host}: other machines can reach this page", file=sys.stderr)
    try:
        serve(app, sock, log_level="info" if args.log else "warning", access_log=args.log)
    finally:
        sock.close()
    return 0
