"""The face generator in the browser behind ``fakefacegen demo`` (needs ``pip install 'fakefacegen[demo]'``).

A grid of faces from a seed (the seed is in the URL, so a link reproduces the grid), a truncation
slider, the latent walk between two clicked faces as a strip and an animation, PNG downloads and
the loaded model's facts. Everything the page needs is served by the package: it works offline.

This module is light on purpose; the web stack (Starlette, uvicorn) is imported by :mod:`.server`
when the command runs (``commands/demo.py``), so ``fakefacegen --help`` stays fast and works
without the extra.
"""

from __future__ import annotations

DEFAULT_PORT = 7860


class DemoError(RuntimeError):
    """The demo cannot start; the message is one line naming the problem."""


def need_extra() -> None:
    """Raise DemoError naming the missing packages unless the 'demo' extra is installed."""
    missing = []
    for mod in ("starlette", "uvicorn"):
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    if missing:
        raise DemoError(
            f"fakefacegen demo needs the 'demo' extra ({', '.join(missing)} not installed): "
            f"pip install 'fakefacegen[demo]'"
        )
