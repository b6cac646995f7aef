"""``report.html``: the study report as one self-contained page to read and listen to.

Rendering only: it takes the results document that ``report.build`` computed and the study
folder, and lays out the same tables as ``report.md`` (results, per-SNR, claims), the plots and,
per example utterance, the noisy input, every system's enhanced output and the clean reference
in audio players beside their spectrograms. Images and audio are embedded as ``data:`` URIs, so
the page works opened from disk, without a server and without a network; a file too large to
embed is linked relative to the study folder instead. Every piece of text is escaped.
"""

from __future__ import annotations

import base64
import os
from html import escape
from pathlib import Path

from bsmamba import files
from bsmamba.study import tables

# Bytes embedded per page (before base64, which adds a third); files past it are linked relative
# to the study folder, so a study with many long examples still gives a page a browser can load.
EMBED_BUDGET_BYTES = 24 * 2**20
_MIME = {".png": "image/png", ".wav": "audio/wav"}
_VERDICT_CLASS = {"holds": "holds", "fails": "fails"}  # every other verdict is shown neutral

_CSS = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1200px;
  padding: 0 1em; color: #222; }
h1, h2, h3 { line-height: 1.2; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
.holds { background: #dff3df; } .fails { background: #f8dcdc; }
.caution { border-left: 4px solid #d9a400; background: #fff8e0; padding: 0.5em 1em; }
.note { color: #555; font-size: 13px; }
figure { display: inline-block; margin: 0 1em 1em 0; }
figure img { max-width: 540px; border: 1px solid #ddd; }
figcaption { font-size: 13px; color: #555; }
.example img { max-width: 600px; }
audio { width: 300px; }
"""


class _Embedder:
    """``data:`` URIs of files until ``budget`` bytes are embedded, then relative links."""

    def __init__(self, study_dir: Path, budget: int = EMBED_BUDGET_BYTES):
        self.study_dir, self.left = study_dir, budget

    def src(self, path: Path) -> str | None:
        """The ``src`` for ``path``; None when the file is missing."""
        if not path.is_file():
            return None
        size = path.stat().st_size
        if size > self.left:  # still works opened from the study folder
            return Path(os.path.relpath(path.resolve(), self.study_dir.resolve())).as_posix()
        self.left -= size
        mime = _MIME.get(path.suffix.lower(), "application/octet-stream")
        return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _table(header: list[str], rows: list[list[str]], row_class=None, numbers=True) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for r in rows:
        cls = f' class="{row_class(r)}"' if row_class and row_class(r) else ""
        num = ' class="num"'
        cells = "".join(f"<td{num if numbers and _numeric(c) else ''}>{escape(c)}</td>" for c in r)
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _numeric(cell: str) -> bool:
    head = cell.split(" ", 1)[0].lstrip("+-−")
    return head.replace(".", "", 1).isdigit() or cell == "-"


def _player(path: Path, emb: _Embedder) -> str:
    src = emb.src(path)
    if src is None:
        return f'<span class="note">missing: {escape(str(path))}</span>'
    return f'<audio controls preload="metadata" src="{escape(src)}"></audio>'


def _example_row(label: str, player: str, picture: str = "") -> str:
    return f"<tr><td>{escape(label)}</td><td>{player}</td><td>{picture}</td></tr>"


def _examples(doc: dict, study_dir: Path, emb: _Embedder) -> list[str]:
    """Per example utterance: noisy, each system's enhanced output, clean; with spectrograms."""
    meta = files.read_json(study_dir / "study.json") or {}
    noisy_dir, clean_dir = Path(meta.get("noisy_dir", "")), Path(meta.get("clean_dir", ""))
    snr = (files.read_json(study_dir / "test_snr.json") or {}).get("by_file", {})
    by_name: dict[str, list[dict]] = {}
    for e in doc.get("examples") or []:
        by_name.setdefault(e["name"], []).append(e)
    out = ["<h2>Audio examples</h2>"]
    out.append(
        '<p class="note">Each spectrogram shows the noisy input (top), the system\'s output '
        "(middle) and the clean reference (bottom); log power, 32 ms frames, 80 dB range.</p>"
    )
    for name, entries in by_name.items():
        at = snr.get(name)
        at = f" (measured input SNR {at:.1f} dB)" if isinstance(at, int | float) else ""
        rows = [_example_row("noisy input", _player(noisy_dir / name, emb))]
        for e in entries:
            img = emb.src(study_dir / e["png"])
            alt = f"spectrogram of {e['system']} on {name}"
            pic = f'<img src="{escape(img)}" alt="{escape(alt)}">' if img else "-"
            rows.append(_example_row(e["system"], _player(study_dir / e["wav"], emb), pic))
        rows.append(_example_row("clean", _player(clean_dir / name, emb)))
        out += [
            f'<section class="example"><h3>{escape(name)}{escape(at)}</h3>',
            "<table><thead><tr><th>Audio</th><th>Player</th><th>Spectrogram</th></tr></thead>",
            f"<tbody>{''.join(rows)}</tbody></table></section>",
        ]
    return out


def render(doc: dict, study_dir: str | Path) -> str:
    """The page for the results document ``doc`` (kind "study_results") of ``study_dir``."""
    sdir = Path(study_dir)
    emb = _Embedder(sdir)
    title = f"Ablation study {doc['recipe']}"
    seeds = ", ".join(str(s) for s in doc["seeds"])
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f"<p>Data: <code>{escape(str(doc['data']))}</code> ({escape(str(doc['data_root']))}); "
        f"systems: {escape(', '.join(doc['systems']))}; seeds: {escape(seeds)}.</p>",
    ]
    if doc["is_demo_data"]:
        out.append(
            '<p class="caution"><b>Caution:</b> these scores are on the small bundled demo set '
            "after a short CPU training. Demo-set PESQ is not VB-DMD PESQ: compare systems with "
            "each other here, never with published VoiceBank+DEMAND numbers.</p>"
        )
    out += [
        "<h2>Results</h2>",
        _table(tables.table_header(doc), tables.table_rows(doc)),
        f'<p class="note">{escape(tables.shapes_note(doc))}</p>',
    ]
    failures = [
        f"{s} {stage}: {err}"
        for s in doc["systems"]
        for stage, err in (doc["by_system"][s].get("per_stage_error") or {}).items()
    ]
    if doc["noisy"].get("error"):
        failures.insert(0, f"noisy input evaluate: {doc['noisy']['error']}")
    if doc["noisy"].get("dnsmos_error"):
        failures.insert(0, f"noisy input dnsmos: {doc['noisy']['dnsmos_error']}")
    for head, items in (("Stages that did not finish", failures), ("Warnings", doc["warnings"])):
        if items:
            lis = "".join(f"<li>{escape(str(i))}</li>" for i in items)
            out.append(f"<h3>{head}</h3><ul>{lis}</ul>")
    header, rows = tables.snr_rows(doc)
    if rows:
        out += [
            "<h2>Per-SNR breakdown</h2>",
            f'<p class="note">Grouped by {escape(doc["snr_grouping"])}; means over utterances '
            "(and seeds).</p>",
            _table(header, rows),
        ]
    if tables.worker_rows(doc):
        out += [
            "<h2>Where each run ran</h2>",
            _table(tables.WORKER_HEADER, tables.worker_rows(doc)),
        ]
    claim_rows = [
        [c["claim"], c["claimed"], c["measured"], c["verdict"], c.get("note", "")]
        for c in doc.get("claims") or []
    ]
    out += [
        "<h2>Claims against measurements</h2>",
        _table(
            ["Claim (plan)", "Claimed", "Measured", "Verdict", "Note"],
            claim_rows,
            row_class=lambda r: _VERDICT_CLASS.get(r[3], ""),
            numbers=False,
        ),
    ]
    if doc.get("plot_error"):
        out.append(f'<p class="note">Plots failed: {escape(doc["plot_error"])}</p>')
    if doc.get("plots"):
        out.append("<h2>Figures</h2>")
        for p in doc["plots"]:
            src = emb.src(sdir / p)
            if src:
                stem = escape(Path(p).stem)
                out.append(
                    f'<figure><img src="{escape(src)}" alt="{stem}">'
                    f"<figcaption>{stem}</figcaption></figure>"
                )
    if doc.get("examples"):
        out += _examples(doc, sdir, emb)
    out.append("</body></html>\n")
    return "\n".join(out)


def write(doc: dict, study_dir: str | Path) -> Path:
    """Render ``doc`` and write it atomically to ``study_dir/report.html``; return the path."""
    return files.write_text(Path(study_dir) / "report.html", render(doc, study_dir))


__all__ = ["render", "write", "EMBED_BUDGET_BYTES"]
