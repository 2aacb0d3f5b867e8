"""Write an audit's result: ``summary.json`` (every number and its protocol) and ``index.html`` (one
self-contained offline page: settings, copy rates, distance histograms and the closest pairs side by
side, all images inline as PNG data URIs).

The page shows training faces next to generated ones. Those are crops of the training data and carry
its licence (CelebA: non-commercial research only): keep the report with the data, do not publish it.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_text, remove_stale_temps

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:1.5em} h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:0.9em} th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}
th{background:#f3f3f3} td.num{text-align:right;font-variant-numeric:tabular-nums}
.pairs{display:flex;flex-wrap:wrap;gap:12px} figure{margin:0} figcaption{font-size:0.8em;max-width:260px}
figure img{image-rendering:pixelated;width:256px} img.plot{max-width:100%} .warn{background:#fff4d6;padding:8px 12px}
.muted{color:#777}
"""


def png_uri(image: np.ndarray) -> str:
    """uint8 (H, W, 3) -> a data: URI holding it as PNG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def pair_image(a: np.ndarray, b: np.ndarray, mirrored: bool = False) -> np.ndarray:
    """Two faces side by side with a 4 px white gap; ``b`` mirrored when it matched mirrored."""
    if mirrored:
        b = b[:, ::-1]
    gap = np.full((a.shape[0], 4, 3), 255, dtype=np.uint8)
    return np.concatenate([a, gap, b], axis=1)


def histogram_png(space: str, d_fake: np.ndarray, d_ref: np.ndarray, threshold: float, ref_label: str) -> str:
    """The two nearest-distance histograms of one space, with the threshold, as a data URI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    lo, hi = float(min(d_fake.min(), d_ref.min())), float(max(d_fake.max(), d_ref.max()))
    bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 60).tolist()
    ax.hist(d_ref, bins=bins, density=True, alpha=0.55, label=f"{ref_label} (n={len(d_ref)})", color="#1f77b4")
    ax.hist(d_fake, bins=bins, density=True, alpha=0.55, label=f"generated (n={len(d_fake)})", color="#d62728")
    ax.axvline(threshold, color="k", ls="--", lw=1, label=f"copy threshold {threshold:.4g}")
    ax.set_xlabel(f"distance to the nearest training face ({space})")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def public_summary(result: dict[str, Any]) -> dict[str, Any]:
    """The result without its arrays (keys starting with '_'), ready for JSON."""
    return {k: v for k, v in result.items() if not k.startswith("_")}


REF_LABELS = {
    "holdout": "held-out real faces (--holdout)",
    "split": "held-out real faces (split)",
    "leave-one-out": "training faces to their nearest other training face",
}


def render_html(result: dict[str, Any]) -> str:
    s = public_summary(result)
    fakes, images, ref_images = result["_fakes"], result["_images"], result["_reference_images"]
    esc = html.escape
    ref_label = REF_LABELS[s["calibration"]]
    out = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>Memorisation audit: {esc(s['model'])}</title>"
        f"<style>{CSS}</style></head><body><h1>Memorisation audit: {esc(s['model'])}</h1>",
        "<p>For each generated face, its nearest training face. The copy threshold is the "
        f"{s['percentile']:g}th percentile of the same distance for real faces that are not in the training index "
        f"({esc(ref_label)}): a model that makes new faces is expected to have about {s['percentile']:g}% of its "
        "faces below it, a model that reproduces training faces far more.</p>",
        "<p class='warn'>This page shows training faces: it carries the training data's licence. "
        "Do not publish it.</p>",
        "<h2>Copy rates</h2><table><tr><th>space</th><th>copy rate</th><th>95% interval</th>"
        "<th>expected without copies</th><th>threshold</th><th>median distance, generated</th>"
        "<th>median distance, real reference</th></tr>",
    ]
    for name, sp in s["spaces"].items():
        lo, hi = sp["copy_rate_ci95"]
        out.append(
            f"<tr><td>{esc(name)}</td><td class='num'>{sp['copy_rate']:.2%} ({sp['copies']}/{s['n_generated']})</td>"
            f"<td class='num'>{lo:.2%} – {hi:.2%}</td><td class='num'>{sp['expected_rate_if_no_copies']:.2%}</td>"
            f"<td class='num'>{sp['threshold']:.4g}</td><td class='num'>{sp['generated_to_train']['p50']:.4g}</td>"
            f"<td class='num'>{sp['reference_to_train']['p50']:.4g}</td></tr>"
        )
    out.append("</table>")
    for name, sp in s["spaces"].items():
        d_fake, d_ref = result["_distances"][name]
        out.append(f"<h2>{esc(name)} space</h2><p class='muted'>{esc(json.dumps(sp['protocol']))}</p>")
        hist = histogram_png(name, d_fake, d_ref, sp["threshold"], ref_label)
        out.append(f"<img class='plot' alt='histograms' src='{hist}'>")
        out.append(
            "<h3>Closest generated faces (left) and their nearest training faces (right)</h3><div class='pairs'>"
        )
        for p in sp["closest_pairs"]:
            img = pair_image(fakes[p["generated"]], images[p["train_row"]], p["mirrored"])
            out.append(
                f"<figure><img alt='pair' src='{png_uri(img)}'><figcaption>generated #{p['generated']} vs "
                f"training row {p['train_row']}{' (mirrored)' if p['mirrored'] else ''}: {p['distance']:.4g} "
                f"({p['ratio_to_threshold'] or 0:.2f} x threshold)</figcaption></figure>"
            )
        out.append("</div><h3>For comparison: the closest real pairs of the calibration</h3><div class='pairs'>")
        for p in sp["closest_reference_pairs"]:
            img = pair_image(ref_images[p["reference_row"]], images[p["train_row"]], p["mirrored"])
            out.append(
                f"<figure><img alt='pair' src='{png_uri(img)}'><figcaption>real row {p['reference_row']} vs "
                f"training row {p['train_row']}: {p['distance']:.4g}</figcaption></figure>"
            )
        out.append("</div>")
    settings = {k: v for k, v in s.items() if k != "spaces"}
    out.append(
        "<h2>Settings</h2><table>"
        + "".join(f"<tr><th>{esc(k)}</th><td>{esc(json.dumps(v))}</td></tr>" for k, v in settings.items())
        + "</table>"
    )
    out.append("</body></html>")
    return "\n".join(out)


def write_report(result: dict[str, Any], out: str | Path) -> dict[str, Path]:
    """Write ``summary.json`` and ``index.html`` into ``out``; returns their paths."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"--out {out}: cannot create the report directory ({e.strerror})") from None
    remove_stale_temps(out)  # the temp files of an audit that was killed while writing here
    summary = atomic_write_text(out / "summary.json", json.dumps(public_summary(result), indent=2) + "\n")
    page = atomic_write_text(out / "index.html", render_html(result))
    return {"summary": summary, "html": page}
