"""The ``fakefacegen`` command: the subcommands of :data:`COMMANDS`, each a module of ``commands/``
with ``register(subparsers)`` (its flags) and ``run(args)`` (one plain function call)."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from . import __version__

# Every subcommand's module, in the order `fakefacegen --help` lists them; each module has
# register(subparsers) and run(args) (see commands/__init__.py).
COMMANDS: tuple[str, ...] = (
    "fakefacegen.commands.prepare",
    "fakefacegen.commands.train",
    "fakefacegen.commands.generate",
    "fakefacegen.commands.evaluate",
    "fakefacegen.commands.audit",
    "fakefacegen.commands.project",
    "fakefacegen.commands.interpolate",
    "fakefacegen.commands.export",
    "fakefacegen.commands.compare",
    "fakefacegen.commands.demo",
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fakefacegen",
        description="Fake faces with a GAN: prepare, train, generate, evaluate.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"fakefacegen {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for modname in COMMANDS:
        importlib.import_module(modname).register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError) as e:
        # One line naming the problem; a traceback only with FAKEFACEGEN_DEBUG=1.
        if os.environ.get("FAKEFACEGEN_DEBUG"):
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
