"""Benchmark report: `python -m src.report RUN_DIR... --out REPORT_DIR [--wandb auto|online|offline|disabled]`.

Reads each run's metrics.json (src.evaluate) or, failing that, summary.json (src.train: its held-out
scores), groups the rows by protocol, and writes REPORT_DIR/report.md and a self-contained report.html
(tables, plus one bar chart per metric as an inline base64 PNG, or inline SVG without matplotlib) with the
papers' published rows (src/eval/published.py) beside ours. With W&B online (or --wandb offline) the same
tables are logged to a W&B run as Tables.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from src import atomic_io
from src.eval.published import CAVEATS, PUBLISHED

log = logging.getLogger(__name__)


@dataclass
class Row:
    """One line of a protocol table: ours (a run) or published (a paper's row)."""

    method: str
    values: dict[str, float]
    source: str
    ours: bool
    verified: bool = True
    counts: dict = field(default_factory=dict)


def load_run(run_dir: Path) -> list[tuple[str, Row]]:
    """(protocol, row) pairs of one run directory: metrics.json first, else summary.json's held-out scores."""
    metrics_file, summary_file = run_dir / "metrics.json", run_dir / "summary.json"
    if metrics_file.is_file():
        data = json.loads(metrics_file.read_text())
        counts = data.get("counts", {})
        return [(data["protocol"], Row(f"ours: {run_dir.name}", dict(data["metrics"]), str(run_dir), True,
                                       counts={k: counts.get(k) for k in ("generated", "real", "paired")}))]
    if summary_file.is_file():
        data = json.loads(summary_file.read_text())
        protocol = f"{data.get('experiment', 'train')} (held-out)"
        heldout = data.get("metrics", {}).get("heldout", {})
        rows = [(protocol, Row(f"ours: {run_dir.name} / {model}", dict(scores), str(run_dir), True))
                for model, scores in heldout.items()]
        if not rows:
            log.warning("%s has no held-out metrics; nothing to report from it", summary_file)
        return rows
    raise FileNotFoundError(f"{run_dir} holds neither metrics.json (python -m src.evaluate) nor summary.json (src.train)")


def collect(run_dirs: Sequence[Path]) -> dict[str, list[Row]]:
    """Rows by protocol: our runs first, then the published rows for that protocol."""
    tables: dict[str, list[Row]] = {}
    for run_dir in run_dirs:
        for protocol, row in load_run(Path(run_dir)):
            tables.setdefault(protocol, []).append(row)
    for protocol, rows in tables.items():
        for pub in PUBLISHED.get(protocol, []):
            rows.append(Row(pub["method"], dict(pub["values"]), pub["source"], False, pub.get("verified", False)))
    return tables


def metric_columns(rows: Sequence[Row]) -> list[str]:
    """Metric names in first-seen order (ours first), leaving out *_std and *_skipped_videos detail columns."""
    names: list[str] = []
    for row in rows:
        for name in row.values:
            if name not in names and not name.endswith(("_std", "_skipped_videos")):
                names.append(name)
    return names


def _fmt(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"


def markdown(tables: dict[str, list[Row]]) -> str:
    lines = ["# Benchmark report", "", "Our runs beside the papers' published rows (unverified rows are marked †).", ""]
    for protocol, rows in tables.items():
        cols = metric_columns(rows)
        lines += [f"## {protocol}", "", "| method | " + " | ".join(cols) + " | source |",
                  "|---|" + "---|" * len(cols) + "---|"]
        for row in rows:
            name = f"**{row.method}**" if row.ours else row.method + ("" if row.verified else " †")
            cells = [_fmt(row.values.get(c)) for c in cols]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {row.source} |")
        if protocol in CAVEATS:
            lines += ["", f"_Note: {CAVEATS[protocol]}_"]
        lines.append("")
    return "\n".join(lines)


def _bar_png(metric: str, rows: Sequence[Row]) -> str | None:
    """A horizontal bar chart as a base64 PNG data URI (None without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    pairs = [(r.method, r.values[metric], r.ours) for r in rows if r.values.get(metric) is not None]
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(pairs) + 1))
    ax.barh([p[0] for p in pairs], [p[1] for p in pairs], color=["#d62728" if p[2] else "#7f7f7f" for p in pairs])
    ax.invert_yaxis()
    ax.set_title(metric)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _bar_svg(metric: str, rows: Sequence[Row]) -> str:
    """The same chart as inline SVG (no dependency)."""
    pairs = [(r.method, r.values[metric], r.ours) for r in rows if r.values.get(metric) is not None]
    top = max((abs(p[1]) for p in pairs), default=1.0) or 1.0
    height = 22 * len(pairs) + 30
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="600" height="{height}">',
             f'<text x="5" y="15" font-weight="bold">{html.escape(metric)}</text>']
    for i, (name, value, ours) in enumerate(pairs):
        y, width = 25 + 22 * i, 300 * abs(value) / top
        parts.append(f'<text x="5" y="{y + 14}" font-size="12">{html.escape(name[:40])}</text>')
        parts.append(f'<rect x="260" y="{y}" width="{width:.1f}" height="16" fill="{"#d62728" if ours else "#7f7f7f"}"/>')
        parts.append(f'<text x="{265 + width:.1f}" y="{y + 13}" font-size="11">{_fmt(value)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def html_report(tables: dict[str, list[Row]]) -> str:
    """A single self-contained HTML file: tables and charts inline, no external resources."""
    out = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>Benchmark report</title><style>",
           "body{font-family:sans-serif;margin:2em} table{border-collapse:collapse} td,th{border:1px solid #ccc;"
           "padding:4px 8px} tr.ours{background:#fde0dd}</style></head><body><h1>Benchmark report</h1>",
           "<p>Our runs (highlighted) beside the papers' published rows (unverified rows are marked †).</p>"]
    for protocol, rows in tables.items():
        cols = metric_columns(rows)
        out.append(f"<h2>{html.escape(protocol)}</h2><table><tr><th>method</th>"
                   + "".join(f"<th>{html.escape(c)}</th>" for c in cols) + "<th>source</th></tr>")
        for row in rows:
            mark = "" if row.ours or row.verified else " †"
            out.append(f"<tr class='{'ours' if row.ours else 'published'}'><td>{html.escape(row.method)}{mark}</td>"
                       + "".join(f"<td>{_fmt(row.values.get(c))}</td>" for c in cols)
                       + f"<td>{html.escape(row.source)}</td></tr>")
        out.append("</table>")
        if protocol in CAVEATS:
            out.append(f"<p><em>Note: {html.escape(CAVEATS[protocol])}</em></p>")
        for metric in cols:
            png = _bar_png(metric, rows)
            out.append(f"<div><img alt='{html.escape(metric)}' src='{png}'/></div>" if png else _bar_svg(metric, rows))
    out.append("</body></html>")
    return "\n".join(out)


def log_to_wandb(tables: dict[str, list[Row]], mode: str, out_dir: Path, project: str) -> str | None:
    """Log each protocol's table as a W&B Table; mode auto = online with an API key, else nothing."""
    from src.trainers.loggers import wandb_key_configured

    if mode == "auto":
        mode = "online" if wandb_key_configured() else "disabled"
    if mode == "disabled":
        return None
    import wandb

    run = wandb.init(project=project, job_type="report", name="benchmark-report", dir=str(out_dir), mode=mode)
    try:
        for protocol, rows in tables.items():
            cols = metric_columns(rows)
            data = [[r.method, r.ours, r.verified, *[r.values.get(c) for c in cols], r.source] for r in rows]
            run.log({f"report/{protocol}": wandb.Table(columns=["method", "ours", "verified", *cols, "source"], data=data)})
    finally:
        run.finish()
    return mode


def build_report(run_dirs: Sequence[str | Path], out_dir: str | Path, wandb_mode: str = "auto",
                 project: str = "i2v-framework") -> dict[str, Path]:
    """Write report.md and report.html into `out_dir`; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = collect([Path(d) for d in run_dirs])
    paths = {"md": out / "report.md", "html": out / "report.html"}
    atomic_io.write_text(paths["md"], markdown(tables))
    atomic_io.write_text(paths["html"], html_report(tables))
    log_to_wandb(tables, wandb_mode, out, project)
    return paths


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m src.report", description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="run directories holding metrics.json or summary.json")
    parser.add_argument("--out", default="report", help="output folder for report.md and report.html")
    parser.add_argument("--wandb", default="auto", choices=("auto", "online", "offline", "disabled"))
    parser.add_argument("--project", default="i2v-framework", help="W&B project")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    paths = build_report(args.runs, args.out, args.wandb, args.project)
    print(f"wrote {paths['md']} and {paths['html']}", file=sys.stdout)


if __name__ == "__main__":
    main()
