"""The report as text: the self-contained HTML page (inline CSS, images as data URIs) and summary.md,
both rendered from the summary alone."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any


def fmt_value(key: str, v: float | None, std: float | None = None) -> str:
    if v is None:
        return "—"
    s = f"{v:.2f}" if key == "fid" else f"{v:.4f}"
    if std is not None:
        s += f" ± {std:.2f}" if key == "fid" else f" ± {std:.4f}"
    return s


def fmt_duration(s: float | None) -> str:
    """Seconds -> '4.2 s', '3 min 20 s', '2 h 05 min'."""
    if s is None:
        return "—"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def _fmt_cfg(v: Any) -> str:
    if isinstance(v, str):
        return v if v else '""'
    return json.dumps(v)


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:1.5em} h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:0.9em} th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3} td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.best td{background:#d9f2d9;font-weight:600}
.swatch{display:inline-block;width:10px;height:10px;margin-right:6px;border-radius:2px}
.warn{background:#fff4d6;border:1px solid #e0c060;padding:8px 12px;margin:12px 0}
.warn li{margin:2px 0} td.changed{background:#fff4d6} code{font-size:0.95em}
.grids{display:flex;flex-wrap:wrap;gap:16px} figure{margin:0;width:280px}
figure img{width:100%;image-rendering:pixelated;border:3px solid #ccc} figure.best img{border-color:#2a2}
figcaption{font-size:0.85em;margin-top:4px;word-break:break-all} img.plot{max-width:100%}
.muted{color:#777}
"""  # noqa: E501 (one CSS rule per line)


def _diff_text(row: dict[str, Any]) -> str:
    if row["index"] == 0:
        return "baseline"
    return ", ".join(f"{k}={_fmt_cfg(v)}" for k, v in row["diff"].items()) or "(same config)"


def _columns(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """(header, cell kind) of the metric columns present."""
    cols = []
    for k in summary["metrics"]:
        cols += [(f"final {k.upper()}", f"final:{k}"), (f"best {k.upper()} (step)", f"best:{k}")]
    if any(row["evaluate_main"] for row in summary["runs"]) and summary["metric"]:
        cols.append((f"evaluate {summary['metric'].upper()} (N)", "evaluate"))
    return cols


def _cell(row: dict[str, Any], kind: str, summary: dict[str, Any]) -> tuple[str, float | None]:
    if kind == "evaluate":
        e, k = row["evaluate_main"], summary["metric"]
        if not e:
            return "—", None
        return f"{fmt_value(k, e[k], e.get(f'{k}_std'))} (N={e.get('n') or '?'})", e[k]
    part, k = kind.split(":")
    if part == "final":
        f = row["final"] or {}
        return fmt_value(k, f.get(k), f.get(f"{k}_std")), f.get(k)
    b = row["best"].get(k)
    if not b:
        return "—", None
    return f"{fmt_value(k, b['value'], b.get('std'))} (@{b['step']})", b["value"]


def render_html(summary: dict[str, Any], images: dict[str, Path], grids: dict[str, Path]) -> str:
    """The report page; every image is embedded, so the file stands alone."""
    e = html.escape
    rank_label = {
        "final": "the final logged value",
        "best": "the best logged value",
        "evaluate": "the eval-*.json value",
    }[summary["sort"]]
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(summary['title'] or 'FakeFaceGen run comparison')}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>{e(summary['title'] or 'FakeFaceGen run comparison')}</h1>",
        f'<p class="muted">{len(summary["runs"])} runs, generated {e(summary["created"])} by '
        f"<code>fakefacegen compare</code>. Baseline (first run): <b>{e(summary['baseline'])}</b>.</p>",
    ]
    if summary["winner"]:
        w = next(r for r in summary["runs"] if r["name"] == summary["winner"])
        out.append(
            f"<p>Best: <b>{e(w['name'])}</b> with {summary['metric'].upper()} "
            f"{e(fmt_value(summary['metric'], w['rank_value']))} ({e(rank_label)}; lower is better).</p>"
        )
    if summary["warnings"]:
        out.append(
            '<div class="warn"><b>Read with care:</b><ul>'
            + "".join(f"<li>{e(x)}</li>" for x in summary["warnings"])
            + "</ul></div>"
        )

    # ---- Results table -------------------------------------------------------------------
    mcols = _columns(summary)
    heads = [
        "rank",
        "run",
        "config diff vs baseline",
        "status",
        "steps",
        "images seen",
        "training time",
        "img/s",
        *[h for h, _ in mcols],
    ]
    out.append(
        f"<h2>Results</h2><p>Sorted by {summary['metric'].upper() if summary['metric'] else '(no metric)'}: "
        f"{e(rank_label)}. The highlighted row is the best.</p>"
    )
    out.append(
        '<table class="results"><thead><tr>' + "".join(f"<th>{e(h)}</th>" for h in heads) + "</tr></thead><tbody>"
    )
    for row in summary["runs"]:
        cells = [
            f'<td class="num">{row["rank"]}{" ★" if row["is_best"] else ""}</td>',
            f'<td title="{e(row["path"])}"><span class="swatch" style="background:{row["color"]}"></span>'
            f"{e(row['name'])}</td>",
            f"<td><code>{e(_diff_text(row))}</code></td>",
            f"<td>{e(str(row['status']))}</td>",
            f'<td class="num">{row["steps"]:,}</td>',
            f'<td class="num">{row["images_seen"]:,}</td>',
            f'<td class="num">{e(fmt_duration(row["elapsed_s"]))}</td>',
            f'<td class="num">{row["img_per_s"]:.0f}</td>' if row["img_per_s"] else '<td class="num">—</td>',
        ]
        for _, kind in mcols:
            text, value = _cell(row, kind, summary)
            attr = f' data-value="{value!r}"' if value is not None else ""
            cells.append(f'<td class="num" data-col="{e(kind)}"{attr}>{e(text)}</td>')
        cls = ' class="best"' if row["is_best"] else ""
        out.append(f'<tr{cls} data-run="{e(row["name"])}">' + "".join(cells) + "</tr>")
    out.append("</tbody></table>")

    # ---- Config diff ---------------------------------------------------------------------
    in_order = sorted(summary["runs"], key=lambda r: r["index"])
    out.append("<h2>Config differences</h2>")
    if summary["diff_keys"]:
        out.append(
            '<table class="config"><thead><tr><th>key</th>'
            + "".join(f"<th>{e(r['name'])}</th>" for r in in_order)
            + "</tr></thead><tbody>"
        )
        for k in summary["diff_keys"]:
            vals = []
            for r in in_order:
                d = r["diff_from_baseline"].get(k)
                # A run without a diff on k has the baseline's value, which any diff on k records.
                v = (
                    d["value"]
                    if d
                    else next(
                        (x["diff_from_baseline"][k]["baseline"] for x in in_order if k in x["diff_from_baseline"]), None
                    )
                )
                vals.append(f'<td class="changed">{e(_fmt_cfg(v))}</td>' if d else f"<td>{e(_fmt_cfg(v))}</td>")
            out.append(f"<tr><td><code>{e(k)}</code></td>" + "".join(vals) + "</tr>")
        out.append("</tbody></table>")
    else:
        out.append("<p>All runs have the same config.</p>")

    # ---- Plots and grids ------------------------------------------------------------------
    if "losses" in images:
        out.append(f'<h2>Losses</h2><img class="plot" alt="D and G losses" src="{_data_uri(images["losses"])}">')
    out.append("<h2>Metrics</h2>")
    if "metrics" in images:
        out.append(f'<img class="plot" alt="metric curves" src="{_data_uri(images["metrics"])}">')
    else:
        out.append("<p>No metric curves: no eval records in log.jsonl (train with <code>--eval-every N</code>).</p>")
    out.append(
        '<h2>Final fixed-noise samples</h2><p class="muted">The same noise for every run '
        '(the EMA generator where train.ema &gt; 0).</p><div class="grids">'
    )
    for row in summary["runs"]:
        g = grids.get(row["name"])
        cls = ' class="best"' if row["is_best"] else ""
        if g is None:
            out.append(
                f'<figure{cls}><p class="muted">no samples</p><figcaption>{e(row["name"])}</figcaption></figure>'
            )
            continue
        out.append(
            f'<figure{cls}><img alt="samples of {e(row["name"])}" src="{_data_uri(g)}">'
            f"<figcaption>{row['rank']}. {e(row['name'])} (step {row['grid_step']:,})</figcaption></figure>"
        )
    out.append("</div></body></html>")
    return "\n".join(out) + "\n"


def _md(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def render_markdown(summary: dict[str, Any]) -> str:
    """summary.md: the results table (and warnings) for docs/."""
    k = summary["metric"]
    lines = [
        f"# {summary['title'] or 'Run comparison'}",
        "",
        f"{len(summary['runs'])} runs compared with `fakefacegen compare` on {summary['created']}; "
        f"baseline: `{summary['baseline']}`.",
    ]
    if k:
        lines.append(
            f"Ranked by {k.upper()} ({summary['sort']}, lower is better)"
            + (f"; best: **{summary['winner']}**." if summary["winner"] else ".")
        )
    lines.append("")
    if summary["warnings"]:
        lines += ["Notes:", ""] + [f"- {_md(w)}" for w in summary["warnings"]] + [""]
    heads = ["rank", "run", "config diff", "images seen", "wall-clock"]
    cols = _columns(summary)
    heads += [h for h, _ in cols]
    lines += [
        "| " + " | ".join(heads) + " |",
        "|" + "|".join("---:" if i in (0, 3) or i > 4 else "---" for i in range(len(heads))) + "|",
    ]
    for row in summary["runs"]:
        name = f"**{row['name']}**" if row["is_best"] else f"`{row['name']}`"
        cells = [
            str(row["rank"]),
            name,
            _md(_diff_text(row)),
            f"{row['images_seen']:,}",
            fmt_duration(row["elapsed_s"]),
        ]
        for _, kind in cols:
            text = _cell(row, kind, summary)[0]
            cells.append(f"**{_md(text)}**" if row["is_best"] and text != "—" else _md(text))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)
