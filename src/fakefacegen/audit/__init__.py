"""Is this a real person? The memorisation audit: how close generated faces come to training faces.

``fakefacegen audit [MODEL] --data DATASET --out DIR`` samples N faces, finds each one's nearest
training face in pixel space and in an identity space (dlib's face-recognition ResNet), calibrates a
copy threshold on real faces that are not in the training index, and writes ``summary.json`` and a
self-contained ``index.html``. See docs/audit.md for the protocol and the measurements behind it.

    from fakefacegen.audit import audit_to_dir
    summary = audit_to_dir(None, "data/celeba64", "audit/", n=2000)
    summary["spaces"]["identity"]["copy_rate"]

Layout: :mod:`.neighbours` (nearest-neighbour search, threshold, copy rate, and :class:`CheapAudit`,
the form training calls), :mod:`.spaces` and :mod:`.identity` (feature spaces), :mod:`.core` (the
audit), :mod:`.report` (the page and the JSON), :mod:`.command` (the subcommand).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .core import audit, sample_faces, split_rows
from .neighbours import CheapAudit, TrainIndex, calibrate, copy_rate, nearest, wilson_interval
from .report import public_summary, render_html, write_report
from .spaces import DEFAULT_SPACES, SPACES, parse_spaces


def audit_to_dir(model: Any, data: str | Path, out: str | Path, **kwargs: Any) -> dict[str, Any]:
    """Audit ``model`` (a path for ``load_generator``, ``None`` for the bundled model, or a sampler
    ``f(n, seed)`` -> uint8 faces) against ``data``; write the report into ``out``; return the summary.
    Keyword arguments are :func:`audit`'s."""
    if model is None or isinstance(model, (str, Path)):
        from ..generate import load_generator

        G = load_generator(model, device=kwargs.get("device", "cpu"))
        kwargs.setdefault("model_name", G.source)
        sampler = G.sample
    else:
        sampler = model
    result = audit(sampler, data, **kwargs)
    write_report(result, out)
    return public_summary(result)


__all__ = [
    "CheapAudit",
    "DEFAULT_SPACES",
    "SPACES",
    "TrainIndex",
    "audit",
    "audit_to_dir",
    "calibrate",
    "copy_rate",
    "nearest",
    "parse_spaces",
    "public_summary",
    "render_html",
    "sample_faces",
    "split_rows",
    "wilson_interval",
    "write_report",
]
