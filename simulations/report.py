"""Turn result rows (one per version, user, strategy) into tables: mean ± std over users.

Columns come from the one metric schema: the run's task's metrics (``Task.metric_spec``) and
the cost fields (``strategies/schema.py``). FLOPs follow the 2-FLOPs-per-multiply-add
convention (torch's FlopCounterMode); the FaLA paper's Table 1 reports about 1.9x these
absolute values with the same ratios.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from strategies.schema import cost_metrics
from tasks.base import MetricSpec
from tasks.registry import get_task

TABLE_COSTS = ("fit-seconds", "forward-flops", "backward-flops", "trainable-params",
               "state-bytes")
"""The cost columns of the printed table (summary.csv has every cost)."""


def metric_spec(rows: Sequence[dict]) -> MetricSpec:
    """The metric spec of the task the rows come from (one task per run)."""
    tasks = {row.get("task", "news") for row in rows}
    if len(tasks) != 1:
        raise ValueError(f"rows mix tasks {sorted(tasks)}; report one task at a time")
    return get_task(tasks.pop()).metric_spec


def table_columns(spec: MetricSpec) -> tuple[str, ...]:
    """Primary metric first, then the other quality metrics (up to three), then costs."""
    quality = [spec.primary, *(m for m in spec.quality if m != spec.primary)][:3]
    return (*quality, *TABLE_COSTS)


def read_rows(path: str | Path) -> list[dict]:
    path = Path(path)
    if path.is_dir():
        path = path / "rows.jsonl"
    rows = []
    with path.open() as handle:
        for line_no, line in enumerate(handle, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{line_no}: not a JSON row ({err})") from err
    return rows


def _order(rows: Sequence[dict]) -> tuple[list[str], list[str]]:
    versions = sorted({(r["version-index"], r["version"]) for r in rows})
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    return [v for _, v in versions], strategies


def summarize(rows: Sequence[dict], columns: Iterable[str] | None = None
              ) -> list[dict[str, object]]:
    """One record per (version, strategy): users, and mean/std/p10/p90 of each column."""
    if columns is None:
        columns = (*metric_spec(rows).names, *cost_metrics())
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["version"], row["strategy"])].append(row)
    versions, strategies = _order(rows)
    out = []
    for version in versions:
        for strategy in strategies:
            members = groups.get((version, strategy))
            if not members:
                continue
            record: dict[str, object] = {"version": version, "strategy": strategy,
                                         "users": len({m["user"] for m in members})}
            for column in columns:
                values = np.array([m[column] for m in members if column in m], dtype=float)
                values = values[np.isfinite(values)]
                if len(values):
                    record[f"{column}-mean"] = float(values.mean())
                    record[f"{column}-std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
                    record[f"{column}-p10"] = float(np.percentile(values, 10))
                    record[f"{column}-p90"] = float(np.percentile(values, 90))
            out.append(record)
    return out


def _fmt(value: float) -> str:
    if not math.isfinite(value):
        return "nan"
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.2e}"
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"


def markdown_table(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """Markdown: mean ± std over users per strategy and version."""
    if columns is None:
        columns = table_columns(metric_spec(rows))
    summary = summarize(rows, columns)
    header = ["version", "strategy", "users", *columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for rec in summary:
        cells = [str(rec["version"]), str(rec["strategy"]), str(rec["users"])]
        for column in columns:
            mean = rec.get(f"{column}-mean")
            cells.append("" if mean is None else f"{_fmt(mean)} ± {_fmt(rec[f'{column}-std'])}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cost_notes(rows: Sequence[dict]) -> list[str]:
    """What the table's numbers cannot show: strategies that fell back to tuning the head
    only (a backbone without layers) and inference-time extra tokens."""
    head_only: dict[str, set[str]] = defaultdict(set)
    extra_tokens: dict[tuple[str, str], list[float]] = defaultdict(list)
    for row in rows:
        if row.get("head-only") == 1:
            head_only[row["version"]].add(row["strategy"])
        if row.get("extra-inference-tokens", 0) > 0:
            extra_tokens[(row["version"], row["strategy"])].append(row["extra-inference-tokens"])
    notes = [f"On {version} (no layers) {', '.join(sorted(names))} tuned the head and θ only."
             for version, names in head_only.items()]
    notes += [f"{strategy} on {version} adds {np.mean(values):.1f} input tokens per text at "
              "every inference (mean over users)."
              for (version, strategy), values in extra_tokens.items()]
    return notes


def write_report(run_dir: str | Path) -> Path:
    """Write table.md and summary.csv beside rows.jsonl; returns the Markdown path."""
    run_dir = Path(run_dir)
    rows = read_rows(run_dir)
    if not rows:
        raise ValueError(f"{run_dir}/rows.jsonl has no rows")
    summary = summarize(rows)
    keys = list(dict.fromkeys(k for rec in summary for k in rec))
    with (run_dir / "summary.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(summary)
    md = run_dir / "table.md"
    spec = metric_spec(rows)
    direction = "higher" if spec.higher_is_better else "lower"
    md.write_text(
        f"Task {rows[0].get('task', 'news')}: mean ± std over users; primary metric "
        f"{spec.primary} ({direction} is better). FLOPs: 2 per multiply-add (torch "
        "FlopCounterMode).\n\n" + markdown_table(rows) + "\n"
        + "".join(f"\n- {note}" for note in cost_notes(rows)) + "\n"
    )
    return md
