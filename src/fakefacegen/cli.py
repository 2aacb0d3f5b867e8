"""The ``fakefacegen`` command: the subcommands of :data:`COMMANDS`, each a module of ``commands/``
with ``register(subparsers)`` (its flags) and ``run(args)`` (one plain function call)."""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from typing import NoReturn

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
    "fakefacegen.commands.directions",
    "fakefacegen.commands.edit",
)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is the one line ``error: --n must be an integer in 1..100000 (got 0)``
    (exit code 2) instead of the usage block and ``PROG: error: argument -n/--n: ...``. Subcommand
    parsers are of this class too (``add_subparsers`` makes them with the parent's class)."""

    def error(self, message: str) -> NoReturn:
        m = re.match(r"argument (\S+?): (.*)", message, re.S)
        if m:
            names = m.group(1).split("/")
            flag = next((n for n in names if n.startswith("--")), names[0])
            message = f"{flag} {m.group(2)}" if m.group(2).startswith("must ") else f"{flag}: {m.group(2)}"
        line = " ".join(message.split())  # one line whatever argparse put in it
        self.exit(2, f"error: {line}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
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
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:
        if e.code == 2:  # a usage error, printed by _Parser.error as one line: returned like every other error
            return 2
        raise  # --help, --version
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
