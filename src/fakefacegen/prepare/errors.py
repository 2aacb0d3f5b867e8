"""The two exceptions of preparing: a fatal problem with the input, and one file skipped with its reason."""

from __future__ import annotations


class PrepareError(ValueError):
    """Fatal problem with the input of :func:`~fakefacegen.prepare.prepare_dataset` (one-line message)."""


class Skip(Exception):
    """Skip the current file; the message is the one-line reason listed in ``manifest["skipped"]``."""
