"""Turn result rows (one per seed, version, user and strategy) into the reports a reader needs to
decide whether a strategy is worth its device cost.

Two entry points:

- ``write_report(run_dir)`` — what ``swapfl run`` prints: ``table.md``, a short table (mean ± std
  over users per strategy and version), next to the full report of that run.
- ``write_full_report(run_dirs, out_dir=None, baseline="global", device_profile=None)`` — the
  full report of one or several runs, as ``swapfl report RUN_DIR… [--baseline global]
  [--out DIR] [--device-profile NAME]`` writes it: ``report.md`` with one section per task,
  ``summary.csv`` (every metric and cost per task, version and strategy), ``paired.csv`` (each
  strategy against the baseline on the same users) and PNG figures (``<task>-bars.png``,
  ``<task>-cost-quality.png``, ``<task>-users.png``).

How numbers are aggregated (the statistics live in ``simulations/statistics.py``): a user's
value is first averaged over the run's replicate seeds, then spread over users (mean, std,
p10, p90); the 95 % interval is a t-interval over the per-seed means over users; pooled values
weigh users by their evaluated units (the task's count metric). Columns come from the one
metric schema: the task's ``metric_spec`` and the cost fields (``strategies/schema.py``).
FLOPs follow the 2-FLOPs-per-multiply-add convention (torch's FlopCounterMode); the FaLA
paper's Table 1 reports about 1.9x these absolute values with the same ratios. Sections
modelled on the FaLA paper's tables (FLOPs, main comparison, ablations, objective × λ) appear
only when the rows hold what they need.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from simulations.statistics import (
    Interval,
    PairedComparison,
    paired_comparison,
    pooled_mean,
    pooled_root_mean_square,
    spread,
    t_interval,
)
from strategies.schema import DEVICE_METRICS, cost_metrics
from tasks.base import MetricSpec
from tasks.registry import get_task

log = logging.getLogger(__name__)

TABLE_COSTS = ("fit-seconds", "forward-flops", "backward-flops", "trainable-params",
               "state-bytes")
"""The cost columns of the printed table (summary.csv has every cost)."""

DEFAULT_BASELINE = "global"
FLOP_PARTS = ("forward-flops", "backward-flops", "solver-flops")
ADAPTATION_FLOPS = "adaptation-flops"
"""Derived per row: forward + backward + solver FLOPs, the device's compute for one version."""
DEVICE_COLUMNS = ("device-seconds", "device-joules")
FITS_MEMORY = "device-fits-memory"
FLOP_REFERENCE = "fala"
"""The track FaLA's Table 1 states ratios against."""

POOLING: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "rmse": pooled_root_mean_square,
}
"""How a metric pools over users when it is not a plain mean over units (the default)."""
APPROXIMATELY_POOLED = frozenset({"f1", "macro-f1"})
"""F1 is not a mean over examples: its count-weighted pooling only approximates the pooled F1."""

PROGRESS_LINES = 10_000
N_RESAMPLES = 10_000
REQUIRED_KEYS = ("version", "version-index", "strategy", "user")
FLOP_CONVENTION = ("FLOPs count 2 per multiply-add (torch FlopCounterMode; solver FLOPs are "
                   "analytic); the FaLA paper's Table 1 reports about 1.9x these absolute "
                   "values with the same ratios.")


# --- reading -------------------------------------------------------------------------------

def read_rows(path: str | Path, on_line: Callable[[int], Any] | None = None,
              required: Sequence[str] = ()) -> list[dict]:
    """The rows of ``rows.jsonl`` (a path to it or to its run folder); a line that is not a
    JSON object, or lacks a ``required`` key, is an error naming file:line."""
    path = Path(path)
    if path.is_dir():
        path = path / "rows.jsonl"
    rows = []
    with path.open() as handle:
        for line_no, line in enumerate(handle, 1):
            if on_line is not None:
                on_line(1)
            if line.strip():
                rows.append(_parse_row(line, f"{path}:{line_no}", required))
    return rows


def _parse_row(line: str, where: str, required: Sequence[str]) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"{where}: not a JSON row ({err})") from err
    if not isinstance(row, dict):
        raise ValueError(f"{where}: a row must be a JSON object, got {type(row).__name__}")
    missing = [key for key in required if key not in row]
    if missing:
        raise ValueError(f"{where}: row lacks {missing}; is this a swapfl rows.jsonl?")
    return row


def rows_path(run_dir: str | Path) -> Path:
    """``run_dir/rows.jsonl``, or FileNotFoundError saying what a run folder holds."""
    path = Path(run_dir) / "rows.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: a run folder (results/<run>/) holds the "
                                "rows.jsonl written by `swapfl run`")
    return path


def read_config(run_dir: str | Path) -> dict:
    """The run's resolved run config (``config.json``); {} for runs that have none."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err


@dataclass
class Run:
    """One run folder: its config and rows (``task`` and ``seed`` filled in for old rows)."""

    path: Path
    config: dict
    rows: list[dict]


def _count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))


def load_runs(run_dirs: Sequence[str | Path], progress: bool = True) -> list[Run]:
    """Read every run folder, with a progress bar on stderr for many rows or several runs."""
    paths = [rows_path(d) for d in run_dirs]
    total = sum(_count_lines(p) for p in paths) if progress else 0
    show = progress and (total > PROGRESS_LINES or len(paths) > 1)
    runs = []
    with tqdm(total=total, disable=not show, desc="reading rows", unit=" rows",
              file=sys.stderr) as bar:
        for path in paths:
            config = read_config(path.parent)
            rows = read_rows(path, on_line=bar.update, required=REQUIRED_KEYS)
            if not rows:
                raise ValueError(f"{path} has no rows (did the run finish?)")
            for row in rows:
                row.setdefault("task", config.get("task", "news"))
                row.setdefault("seed", int(config.get("seed", 0)))
            runs.append(Run(path.parent, config, rows))
    return runs


# --- grouping and aggregation --------------------------------------------------------------

def metric_spec(rows: Sequence[dict]) -> MetricSpec:
    """The metric spec of the task the rows come from (one task at a time)."""
    tasks = {row.get("task", "news") for row in rows}
    if len(tasks) != 1:
        raise ValueError(f"rows mix tasks {sorted(tasks)}; report one task at a time")
    return get_task(tasks.pop()).metric_spec


def table_columns(spec: MetricSpec) -> tuple[str, ...]:
    """Primary metric first, then the other quality metrics (up to three), then costs."""
    quality = [spec.primary, *(m for m in spec.quality if m != spec.primary)][:3]
    return (*quality, *TABLE_COSTS)


def lower_is_better(spec: MetricSpec, metric: str) -> bool:
    """A metric's direction: listed in ``lower_is_better``, or the primary of a task whose
    primary is not higher-is-better."""
    return metric in spec.lower_is_better or (metric == spec.primary
                                              and not spec.higher_is_better)


def orders(rows: Sequence[dict]) -> tuple[list[str], list[str]]:
    """Versions in release order and strategies in order of first appearance."""
    versions = sorted({(r["version-index"], r["version"]) for r in rows})
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    return list(dict.fromkeys(v for _, v in versions)), strategies


Cell = dict[tuple[int, str], float]
"""One (version, strategy)'s values of one metric by (seed, user)."""


def cells(rows: Iterable[dict], metric: str) -> dict[tuple[str, str], Cell]:
    """Values of ``metric`` by (version, strategy), then (seed, user); repeated rows (the same
    seed in several runs) are averaged; non-finite values are left out."""
    collected: dict[tuple[str, str], dict[tuple[int, str], list[float]]] = defaultdict(
        lambda: defaultdict(list))
    for row in rows:
        value = row.get(metric)
        if isinstance(value, int | float) and math.isfinite(value):
            collected[(row["version"], row["strategy"])][(row["seed"], row["user"])].append(
                float(value))
    return {key: {unit: float(np.mean(v)) for unit, v in by_unit.items()}
            for key, by_unit in collected.items()}


def evaluated_units(rows: Iterable[dict]) -> dict[tuple[str, str], set[tuple[int, str]]]:
    """The (seed, user) pairs each (version, strategy) has rows for."""
    units: dict[tuple[str, str], set[tuple[int, str]]] = defaultdict(set)
    for row in rows:
        units[(row["version"], row["strategy"])].add((row["seed"], row["user"]))
    return units


def user_means(cell: Cell) -> dict[str, float]:
    """Each user's value averaged over seeds."""
    by_user: dict[str, list[float]] = defaultdict(list)
    for (_, user), value in cell.items():
        by_user[user].append(value)
    return {user: float(np.mean(v)) for user, v in by_user.items()}


def seed_means(cell: Cell) -> dict[int, float]:
    """Each seed's mean over users."""
    by_seed: dict[int, list[float]] = defaultdict(list)
    for (seed, _), value in cell.items():
        by_seed[seed].append(value)
    return {seed: float(np.mean(v)) for seed, v in sorted(by_seed.items())}


def pooled(metric: str, cell: Cell, counts: Cell) -> float | None:
    """The metric pooled over every (seed, user) weighted by its evaluated units."""
    units = [u for u in cell if counts.get(u, 0) > 0]
    if not units:
        return None
    pool = POOLING.get(metric, pooled_mean)
    return pool(np.array([cell[u] for u in units]), np.array([counts[u] for u in units]))


def _metric_record(metric: str, cell: Cell, counts: Cell | None, quality: bool
                   ) -> dict[str, float]:
    users = spread(list(user_means(cell).values()))
    record = {f"{metric}-mean": users.mean, f"{metric}-std": users.std,
              f"{metric}-p10": users.p10, f"{metric}-p90": users.p90}
    if quality:
        interval = t_interval(list(seed_means(cell).values()))
        if interval is not None:
            record |= {f"{metric}-ci-low": interval.low, f"{metric}-ci-high": interval.high}
        pooled_value = pooled(metric, cell, counts) if counts else None
        if pooled_value is not None:
            record[f"{metric}-pooled"] = pooled_value
    return record


def summary_columns(rows: Sequence[dict], spec: MetricSpec) -> tuple[str, ...]:
    """Every metric of the task, then every cost and derived column some row holds."""
    extra = (*cost_metrics(), *DEVICE_METRICS, ADAPTATION_FLOPS, *DEVICE_COLUMNS, FITS_MEMORY)
    present = {key for row in rows for key in row}
    return tuple(dict.fromkeys((*spec.names,
                                *(c for c in extra if c in present and c != "user-index"))))


def summarize(rows: Sequence[dict], columns: Iterable[str] | None = None,
              spec: MetricSpec | None = None) -> list[dict[str, object]]:
    """One record per (version, strategy): users, seeds and, per column, mean/std/p10/p90 over
    users (each user averaged over seeds); quality metrics add the 95 % t-interval over
    seeds (``-ci-low``/``-ci-high``, two seeds or more) and the pooled value (``-pooled``)."""
    spec = spec or metric_spec(rows)
    columns = tuple(columns) if columns is not None else summary_columns(rows, spec)
    by_metric = {c: cells(rows, c) for c in columns}
    counts = cells(rows, spec.counts[0]) if spec.counts else {}
    index = {r["version"]: r["version-index"] for r in rows}
    versions, strategies = orders(rows)
    evaluated = evaluated_units(rows)
    out = []
    for version in versions:
        for strategy in strategies:
            units = evaluated.get((version, strategy))
            if not units:
                continue
            record: dict[str, object] = {
                "version": version, "version-index": index[version], "strategy": strategy,
                "users": len({u for _, u in units}), "seeds": len({s for s, _ in units})}
            for column, by_key in by_metric.items():
                if by_key.get((version, strategy)):
                    record |= _metric_record(column, by_key[(version, strategy)],
                                             counts.get((version, strategy)),
                                             column in spec.quality)
            out.append(record)
    return out


def compare(primary: Mapping[tuple[str, str], Cell], version: str, candidate: str,
            reference: str, lower: bool, seed: int = 0, n_resamples: int = N_RESAMPLES
            ) -> PairedComparison | None:
    """``candidate`` against ``reference`` on one version, over the users (and, per user, the
    seeds) both were evaluated on; None when they share no user."""
    cand, ref = primary.get((version, candidate), {}), primary.get((version, reference), {})
    shared = sorted(set(cand) & set(ref))
    if not shared:
        return None
    by_user: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for unit in shared:
        by_user[unit[1]].append((cand[unit], ref[unit]))
    pairs = np.array([np.mean(v, axis=0) for v in by_user.values()])
    return paired_comparison(pairs[:, 0], pairs[:, 1], lower_is_better=lower,
                             n_resamples=n_resamples, seed=seed)


# --- tracks: what each strategy column ran ------------------------------------------------

def resolve_tracks(configs: Sequence[Mapping], present: Iterable[str]) -> dict[str, Any]:
    """The strategy object of each present track, from the runs' configs (aliases and their
    options included) or, for runs without one, from the registry by name. Tracks neither
    describes (the first personalization) are left out."""
    from strategies.registry import create, create_many, names

    present = list(present)
    tracks: dict[str, Any] = {}
    for config in configs:
        if "strategies" not in config:
            continue
        try:
            created = create_many(config["strategies"], config.get("strategy-options", ""))
        except ValueError as err:
            log.warning("cannot rebuild the tracks of %r: %s", config["strategies"], err)
            continue
        for name, strategy in created.items():
            known = tracks.setdefault(name, strategy)
            if type(known) is not type(strategy) or known.config != strategy.config:
                log.warning("track %r differs between runs; the report uses the first", name)
    registered = set(names())
    for name in present:
        if name not in tracks and name in registered:
            tracks[name] = create(name)
    return {name: tracks[name] for name in present if name in tracks}


def ablation_groups(tracks: Mapping[str, Any]) -> dict[str, list[str]]:
    """Base track -> the other tracks running the same registered strategy (variants such as
    fala-kmeans, or aliases with other options). A base is a track named after the
    registered strategy it runs."""
    from strategies.registry import lineage

    lineages = {name: lineage(type(s).name) for name, s in tracks.items()}
    return {base: variants for base in tracks if lineages[base] == base
            if (variants := [t for t in tracks if t != base and lineages[t] == base])}


def config_difference(config: Any, reference: Any) -> str:
    """The options in which a variant's config differs from its base's (``selection=kmeans``)."""
    changed = [f"{f.name.replace('_', '-')}={getattr(config, f.name)}"
               for f in dataclasses.fields(config)
               if getattr(config, f.name) != getattr(reference, f.name, object())]
    return ", ".join(changed) or "same options"


def fixed_lambda_tracks(tracks: Mapping[str, Any]) -> dict[str, tuple[str, float]]:
    """Track -> (objective, λ) for tracks whose config has an objective and a fixed λ (no
    per-user λ grid): the cells of FaLA's Table 5."""
    out = {}
    for name, strategy in tracks.items():
        config = strategy.config
        objective, lam = getattr(config, "objective", None), getattr(config, "lam", None)
        grid = getattr(config, "lam_values", lambda: None)()
        if objective is not None and lam is not None and not grid:
            out[name] = (str(objective), float(lam))
    return out


# --- device budgets -----------------------------------------------------------------------

def load_device_profile(name: str | None, profiles_path: Path | None = None) -> Any:
    """The named device profile (``simulations/budgets.py``), or a ValueError listing the
    known ones; None when no profile is asked for."""
    if name is None:
        return None
    from simulations.budgets import load_profiles

    profiles = load_profiles(profiles_path)
    if name not in profiles:
        raise ValueError(f"unknown device profile {name!r}; known: {sorted(profiles)}")
    return profiles[name]


def add_derived(rows: Iterable[dict], profile: Any = None) -> None:
    """Add per-row derived columns: adaptation FLOPs and, with a device profile, its
    estimated seconds and joules and whether the fit fits the device's memory (1/0)."""
    for row in rows:
        parts = [row[p] for p in FLOP_PARTS if isinstance(row.get(p), int | float)]
        if parts:
            row[ADAPTATION_FLOPS] = float(sum(parts))
        if profile is None:
            continue
        numbers = {k: float(v) for k, v in row.items()
                   if isinstance(v, int | float) and not isinstance(v, bool)}
        estimate = profile.estimate(numbers)
        row.update({k: float(estimate[k]) for k in DEVICE_COLUMNS if k in estimate})
        fits = profile.fits_memory(numbers)
        if fits is not None:
            row[FITS_MEMORY] = 1.0 if fits else 0.0


# --- formatting ---------------------------------------------------------------------------

def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    if not math.isfinite(value):
        return "nan"
    if abs(value) < 1e-12:  # rounding noise of a mean of equal values, e.g. a CI of 1e-16
        return "0"
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.2e}"
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"


def _signed(value: float) -> str:
    return ("+" if value > 0 else "") + _fmt(value)


def _table(header: Sequence[str], lines: Iterable[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(cells) + " |" for cells in lines), ""]


def markdown_table(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """Markdown: mean ± std over users (each user averaged over seeds) per strategy and
    version."""
    spec = metric_spec(rows)
    columns = columns if columns is not None else table_columns(spec)
    header = ["version", "strategy", "users", *columns]
    lines = []
    for rec in summarize(rows, columns, spec):
        cells_ = [str(rec["version"]), str(rec["strategy"]), str(rec["users"])]
        for column in columns:
            mean = rec.get(f"{column}-mean")
            cells_.append("" if mean is None else f"{_fmt(mean)} ± {_fmt(rec[f'{column}-std'])}")
        lines.append(cells_)
    return "\n".join(_table(header, lines)).rstrip("\n")


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


# --- one task's report --------------------------------------------------------------------

@dataclass
class TaskReport:
    """Everything one task's section, CSV lines and figures are made from."""

    task: str
    spec: MetricSpec
    rows: list[dict]
    runs: list[str]
    tracks: dict[str, Any]
    baseline: str
    bootstrap_seed: int = 0
    n_resamples: int = N_RESAMPLES
    versions: list[str] = field(init=False)
    strategies: list[str] = field(init=False)
    seeds: list[int] = field(init=False)
    lower: bool = field(init=False)
    repeated: int = 0  # (seed, version, strategy, user) found in several runs, averaged
    summary: dict[tuple[str, str], dict] = field(init=False)
    primary: dict[tuple[str, str], Cell] = field(init=False)
    paired: dict[tuple[str, str], PairedComparison] = field(init=False)

    def __post_init__(self) -> None:
        self.versions, self.strategies = orders(self.rows)
        self.seeds = sorted({r["seed"] for r in self.rows})
        self.summary = {(r["version"], r["strategy"]): r
                        for r in summarize(self.rows, spec=self.spec)}
        self.primary = cells(self.rows, self.spec.primary)
        self.lower = lower_is_better(self.spec, self.spec.primary)
        self.paired = {(v, s): result for v in self.versions for s in self.strategies
                       if s != self.baseline
                       and (result := self.compare(v, s, self.baseline)) is not None}

    def compare(self, version: str, candidate: str, reference: str) -> PairedComparison | None:
        return compare(self.primary, version, candidate, reference, self.lower,
                       seed=self.bootstrap_seed, n_resamples=self.n_resamples)

    def record(self, version: str, strategy: str) -> dict | None:
        return self.summary.get((version, strategy))

    def present(self, version: str) -> list[str]:
        return [s for s in self.strategies if (version, s) in self.summary]

    @property
    def swap_versions(self) -> list[str]:
        return [v for v in self.versions
                if any(r["version-index"] >= 2 for r in self.summary.values()
                       if r["version"] == v)]

    def interval(self, version: str, strategy: str, metric: str) -> Interval | None:
        rec = self.record(version, strategy) or {}
        if f"{metric}-ci-low" not in rec:
            return None
        return Interval(rec[f"{metric}-mean"], rec[f"{metric}-ci-low"], rec[f"{metric}-ci-high"])

    def mean_cell(self, version: str, strategy: str, metric: str) -> str:
        """``mean ± CI half-width``; ``mean (1 seed: no CI)`` when this strategy has one seed
        while others have more."""
        rec = self.record(version, strategy) or {}
        if f"{metric}-mean" not in rec:
            return ""
        interval = self.interval(version, strategy, metric)
        if interval is not None:
            return f"{_fmt(rec[f'{metric}-mean'])} ± {_fmt(interval.half_width)}"
        if len(self.seeds) == 1:  # the column header says so once
            return _fmt(rec[f"{metric}-mean"])
        return f"{_fmt(rec[f'{metric}-mean'])} (1 seed: no CI)"

    def difference_cell(self, comparison: PairedComparison | None) -> tuple[str, str]:
        if comparison is None:
            return "", ""
        ci = comparison.ci
        return (f"{_signed(comparison.mean_difference)} [{_signed(ci.low)}, {_signed(ci.high)}]",
                f"{comparison.wins}/{comparison.ties}/{comparison.losses}")

    def has(self, column: str) -> bool:
        return any(f"{column}-mean" in rec for rec in self.summary.values())


def _direction(spec: MetricSpec, metric: str) -> str:
    return "lower" if lower_is_better(spec, metric) else "higher"


def _main_section(report: TaskReport) -> list[str]:
    spec, primary, baseline = report.spec, report.spec.primary, report.baseline
    ci_label = ("mean ± 95 % CI over seeds" if len(report.seeds) > 1
                else "mean (1 seed: no CI)")
    header = ["version", "strategy", "users", "seeds", f"{primary} {ci_label}", "std", "p10",
              "p90", "pooled", f"Δ vs {baseline} [95 % bootstrap CI]", "wins/ties/losses"]
    lines = []
    for version in report.versions:
        for strategy in report.present(version):
            rec = report.record(version, strategy)
            lines.append([version, strategy, str(rec["users"]), str(rec["seeds"]),
                          report.mean_cell(version, strategy, primary),
                          *(_fmt(rec.get(f"{primary}-{s}")) for s in ("std", "p10", "p90",
                                                                      "pooled")),
                          *report.difference_cell(report.paired.get((version, strategy)))])
    out = ["### Main comparison (FaLA Table 2 analogue)", "",
           f"Primary metric {primary} ({_direction(spec, primary)} is better), user-macro: "
           "each user's value averaged over seeds, then mean, std, p10 and p90 over users. "
           f"Δ is the per-user difference strategy − {baseline} (same users and data), its "
           f"95 % interval a bootstrap over users ({report.n_resamples} resamples, seed "
           f"{report.bootstrap_seed}); a win is a user for whom the strategy is better "
           f"({_direction(spec, primary)} {primary}), a tie an exact equality (within 1e-12).",
           ""]
    if not any(baseline in report.present(v) for v in report.versions):
        out += [f"The baseline {baseline!r} is absent from this task's rows: no paired "
                f"comparison (strategies here: {', '.join(report.strategies)}).", ""]
    return out + _table(header, lines) + _other_quality_table(report)


def _other_quality_table(report: TaskReport) -> list[str]:
    others = [m for m in report.spec.quality if m != report.spec.primary and report.has(m)]
    if not others:
        return []
    header = ["version", "strategy",
              *(f"{m} ({_direction(report.spec, m)} is better)" for m in others)]
    lines = [[version, strategy,
              *(_with_pooled(report.mean_cell(version, strategy, m),
                             report.record(version, strategy).get(f"{m}-pooled"))
                for m in others)]
             for version in report.versions for strategy in report.present(version)]
    return ["Other quality metrics (user-macro mean with the same interval, and pooled):", "",
            *_table(header, lines)]


def _with_pooled(cell: str, pooled_value: float | None) -> str:
    return cell if pooled_value is None else f"{cell} (pooled {_fmt(pooled_value)})"


def _flops_section(report: TaskReport) -> list[str]:
    if not report.has(ADAPTATION_FLOPS) or not report.swap_versions:
        return []
    header = ["version", "strategy", *FLOP_PARTS, "total", f"× {FLOP_REFERENCE} total"]
    lines = []
    for version in report.swap_versions:
        reference = (report.record(version, FLOP_REFERENCE) or {}).get(f"{ADAPTATION_FLOPS}-mean")
        for strategy in report.present(version):
            rec = report.record(version, strategy)
            total = rec.get(f"{ADAPTATION_FLOPS}-mean")
            ratio = f"{total / reference:.2f}" if reference and total is not None else ""
            lines.append([version, strategy, *(_fmt(rec.get(f"{p}-mean")) for p in FLOP_PARTS),
                          _fmt(total), ratio])
    return ["### Adaptation FLOPs per user and swap (FaLA Table 1 analogue)", "",
            f"Mean over users of each swap's device compute. {FLOP_CONVENTION}", "",
            *_table(header, lines)]


def _device_section(report: TaskReport, profile: Any) -> list[str]:
    if profile is None or not report.has("device-seconds"):
        return []
    header = ["version", "strategy", "device-seconds mean", "device-seconds p90",
              "device-joules mean", "device-joules p90", "users whose fit fits in memory"]
    fits = {key: user_means(cell) for key, cell in cells(report.rows, FITS_MEMORY).items()}
    lines, sentences = [], []
    for version in report.versions:
        for strategy in report.present(version):
            rec = report.record(version, strategy)
            by_user = fits.get((version, strategy), {})
            fitting = sum(v >= 1 for v in by_user.values())  # in every seed
            lines.append([version, strategy,
                          *(_fmt(rec.get(f"{c}-{s}")) for c in DEVICE_COLUMNS
                            for s in ("mean", "p90")),
                          f"{fitting}/{len(by_user)}" if by_user else ""])
            if "device-seconds-p90" in rec and rec.get(f"{ADAPTATION_FLOPS}-mean"):
                sentences.append(_budget_sentence(version, strategy, rec["device-seconds-p90"],
                                                  profile.name, fitting, len(by_user)))
    return [f"### Device budget on {profile.name}", "", f"{profile.description}. Seconds and "
            "joules are estimates from each row's FLOPs and state bytes "
            "(simulations/budgets.py), not host timings; memory compares the fit's peak "
            "memory growth on the simulation host (without the backbone's own weights) with "
            "the device's.", "", *_table(header, lines), *sentences, ""]


def _budget_sentence(version: str, strategy: str, p90_seconds: float, device: str,
                     fitting: int, users: int) -> str:
    if fitting < users:
        return (f"- {version}: {strategy} needs {p90_seconds:.3g} s (p90 over users) on "
                f"{device}, but exceeds its memory for {users - fitting}/{users} users")
    return f"- {version}: {strategy} fits in {p90_seconds:.3g} s (p90 over users) on {device}"


def _ablation_section(report: TaskReport) -> list[str]:
    groups = ablation_groups(report.tracks)
    if not groups:
        return []
    primary = report.spec.primary
    out = ["### Ablations (FaLA Table 4 analogue)", "",
           "Tracks running the same registered strategy as a base track, with the options "
           f"that differ; Δ {primary} is the paired per-user difference to the base "
           "(bootstrap 95 % CI over users).", ""]
    header = ["version", "track", "differs from base in", f"{primary}",
              "Δ vs base [95 % CI]", "wins/ties/losses", f"{ADAPTATION_FLOPS} mean"]
    for base, variants in groups.items():
        lines = []
        for version in report.versions:
            for track in [base, *variants]:
                if (version, track) not in report.summary:
                    continue
                diff = ("(base)" if track == base else config_difference(
                    report.tracks[track].config, report.tracks[base].config))
                comparison = None if track == base else report.compare(version, track, base)
                lines.append([version, track, diff, report.mean_cell(version, track, primary),
                              *report.difference_cell(comparison),
                              _fmt(report.record(version, track).get(
                                  f"{ADAPTATION_FLOPS}-mean"))])
        out += [f"Base: {base}", "", *_table(header, lines)]
    return out


def _objective_lambda_section(report: TaskReport) -> list[str]:
    cells_ = fixed_lambda_tracks(report.tracks)
    if not cells_:
        return []
    primary = report.spec.primary
    objectives = list(dict.fromkeys(objective for objective, _ in cells_.values()))
    lambdas = sorted({lam for _, lam in cells_.values()})
    out = ["### Objective × λ (FaLA Table 5 analogue)", "",
           f"{primary} per track with a fixed λ (no per-user λ grid), by objective (rows) and "
           "λ (columns); the track name in brackets.", ""]
    for version in report.versions:
        grid = {cell: f"{report.mean_cell(version, track, primary)} ({track})"
                for track, cell in cells_.items() if (version, track) in report.summary}
        if not grid:
            continue
        lines = [[objective, *(grid.get((objective, lam), "") for lam in lambdas)]
                 for objective in objectives]
        out += [f"{version}:", "", *_table(["objective", *(f"λ={lam:g}" for lam in lambdas)],
                                           lines)]
    return out


def _cost_section(report: TaskReport) -> list[str]:
    shown = set(FLOP_PARTS) | {ADAPTATION_FLOPS, *DEVICE_COLUMNS, FITS_MEMORY, "fit-error"}
    columns = [c for c in summary_columns(report.rows, report.spec)
               if c not in report.spec.names and c not in shown and report.has(c)
               and any(rec.get(f"{c}-mean", 0) != 0 for rec in report.summary.values())]
    if not columns:
        return []
    lines = [[version, strategy,
              *(f"{_fmt(rec.get(f'{c}-mean'))} ± {_fmt(rec.get(f'{c}-std'))}"
                if f"{c}-mean" in rec else "" for c in columns)]
             for version in report.versions for strategy in report.present(version)
             if (rec := report.record(version, strategy))]
    notes = [f"- {note}" for note in cost_notes(report.rows)]
    return ["### Device costs", "", "Mean ± std over users (columns that are zero everywhere "
            "are left out; summary.csv has all).", "",
            *_table(["version", "strategy", *columns], lines), *notes, *([""] if notes else [])]


# --- figures ------------------------------------------------------------------------------

def _figures(report: TaskReport, out_dir: Path, profile: Any) -> list[str]:
    try:
        from simulations import plots
    except ImportError as err:  # the tables still stand without figures
        log.warning("no figures: %s", err)
        return ["### Figures", "", f"Not drawn: {err} (install matplotlib).", ""]

    colors = plots.strategy_colors(report.strategies)
    primary, task = report.spec.primary, report.task
    label = f"{primary} ({_direction(report.spec, primary)} is better)"
    out = ["### Figures", ""]
    if len(report.seeds) > 1:
        error = f"95 % t-interval over {len(report.seeds)} seeds"
    else:
        error = "±1 std over users (1 seed: no CI)"
    panels = {v: [plots.Bar(s, report.record(v, s)[f"{primary}-mean"], _error_bar(report, v, s))
                  for s in report.present(v) if f"{primary}-mean" in report.record(v, s)]
              for v in report.versions}
    bars = plots.strategy_bars(out_dir / f"{task}-bars.png", f"{task}: {primary} per strategy",
                               f"{label}, user-macro mean", error, panels, colors)
    out += [f"![{task} bars]({bars.name})", "",
            f"{primary} per strategy and version; error bars: {error}.", ""]
    out += _cost_quality_figure(report, out_dir, profile, colors, label)
    series = _user_series(report)
    users = plots.user_lines(out_dir / f"{task}-users.png",
                             f"{task}: {primary} per user across versions", label,
                             report.versions, series, colors)
    return out + [f"![{task} users]({users.name})", "",
                  f"Each user's {primary} (averaged over seeds) across versions, one panel per "
                  "strategy; the black line is the mean over users.", ""]


def _error_bar(report: TaskReport, version: str, strategy: str) -> float | None:
    primary = report.spec.primary
    if len(report.seeds) > 1:
        interval = report.interval(version, strategy, primary)
        return None if interval is None else interval.half_width
    return report.record(version, strategy).get(f"{primary}-std")


def _cost_quality_figure(report: TaskReport, out_dir: Path, profile: Any,
                         colors: Mapping[str, tuple], label: str) -> list[str]:
    from simulations import plots

    measures = {"adaptation FLOPs per user (forward + backward + solver; log)": ADAPTATION_FLOPS}
    if profile is not None:
        measures[f"device seconds per user on {profile.name} (s; log)"] = "device-seconds"
    primary = report.spec.primary
    panels = {
        x_label: {v: [plots.CostPoint(s, rec[f"{column}-mean"], rec[f"{primary}-mean"])
                      for s in report.present(v)
                      if f"{column}-mean" in (rec := report.record(v, s))
                      and f"{primary}-mean" in rec]
                  for v in report.swap_versions}
        for x_label, column in measures.items() if report.has(column)}
    panels = {k: v for k, v in panels.items() if any(v.values())}
    if not panels:
        return []
    path = plots.cost_quality(out_dir / f"{report.task}-cost-quality.png",
                              f"{report.task}: device cost vs {primary} after each swap", label,
                              not report.lower, panels, colors)
    return [f"![{report.task} cost vs quality]({path.name})", "",
            f"Mean cost per user (log scale) against user-macro {primary}, one point per "
            "strategy and swap version; dashed: the Pareto front. Strategies with zero cost "
            "are drawn hollow at a floor a decade below the smallest positive cost (the "
            "legend gives it).", ""]


def _user_series(report: TaskReport) -> dict[str, dict[str, list[float]]]:
    series: dict[str, dict[str, list[float]]] = {}
    for strategy in report.strategies:
        by_version = {v: user_means(report.primary.get((v, strategy), {}))
                      for v in report.versions}
        users = sorted({u for values in by_version.values() for u in values})
        if users:
            series[strategy] = {u: [by_version[v].get(u, math.nan) for v in report.versions]
                                for u in users}
    return series


# --- the report ---------------------------------------------------------------------------

def _task_section(report: TaskReport, out_dir: Path, profile: Any) -> list[str]:
    spec = report.spec
    users = len({r["user"] for r in report.rows})
    seeds = " ".join(str(s) for s in report.seeds)
    head = [f"## Task {report.task}", "",
            f"Runs: {', '.join(report.runs)}. {users} users, seeds {seeds} "
            f"({len(report.seeds)} seed{'s' if len(report.seeds) > 1 else ''}). "
            f"Primary metric: {spec.primary} ({_direction(spec, spec.primary)} is better).", ""]
    if report.repeated:
        head += [f"Note: {report.repeated} (seed, version, strategy, user) results appear in "
                 "several runs and are averaged, not counted as replicates; runs meant as "
                 "replicates need distinct seeds.", ""]
    return [*head, *_main_section(report), *_flops_section(report),
            *_device_section(report, profile), *_ablation_section(report),
            *_objective_lambda_section(report), *_cost_section(report),
            *_figures(report, out_dir, profile)]


def _conventions(reports: Sequence[TaskReport]) -> list[str]:
    counts = sorted({c for r in reports for c in r.spec.counts})
    approximate = sorted({m for r in reports for m in r.spec.quality if m in APPROXIMATELY_POOLED})
    lines = [
        "- User-macro: each user's value averaged over seeds, then the mean over users; the "
        "spread over users is std (ddof 1), p10 and p90.",
        "- 95 % CI: a Student-t interval over the per-seed means over users; with one seed "
        "there is none (\"1 seed: no CI\").",
        f"- Pooled: every (seed, user) weighted by its evaluated units ({', '.join(counts)}); "
        "exact for accuracy, MAE and impression-averaged AUC/MRR/nDCG; RMSE pools as the "
        "square root of the count-weighted mean of squares.",
        f"- {FLOP_CONVENTION}",
    ]
    if approximate:
        lines.insert(3, f"- Pooled {', '.join(approximate)} only approximate the F1 of the "
                        "pooled predictions (F1 is not a mean over examples).")
    return ["Conventions:", "", *lines, ""]


def _summary_lines(reports: Sequence[TaskReport]) -> list[dict]:
    return [{"task": r.task, **rec} for r in reports for rec in r.summary.values()]


def _paired_lines(reports: Sequence[TaskReport]) -> list[dict]:
    return [{"task": r.task, "version": version, "strategy": strategy,
             "baseline": r.baseline, "metric": r.spec.primary,
             "better": _direction(r.spec, r.spec.primary), "users": c.users,
             "mean-difference": c.mean_difference, "ci-low": c.ci.low, "ci-high": c.ci.high,
             "wins": c.wins, "ties": c.ties, "losses": c.losses}
            for r in reports for (version, strategy), c in r.paired.items()]


def _write_csv(path: Path, records: Sequence[dict], header: Sequence[str] = ()) -> None:
    keys = list(dict.fromkeys([*header, *(k for rec in records for k in rec)]))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(records)


PAIRED_HEADER = ("task", "version", "strategy", "baseline", "metric", "better", "users",
                 "mean-difference", "ci-low", "ci-high", "wins", "ties", "losses")


def _check_baseline(baseline: str, runs: Sequence[Run]) -> None:
    known = {row["strategy"] for run in runs for row in run.rows}
    if baseline not in known:
        raise ValueError(f"unknown baseline {baseline!r}; the rows hold strategies "
                         f"{sorted(known)} (choose one with --baseline)")


def _check_baseline_in_configs(baseline: str, configs: Sequence[Mapping]) -> None:
    """Fail before reading rows when every run's config lists its tracks and none has the
    baseline (the first personalization's rows count as a strategy too)."""
    if not configs or any("strategies" not in c for c in configs):
        return
    from client.device import FIRST_PERSONALIZATION
    from strategies.registry import parse_tracks

    known = {FIRST_PERSONALIZATION}
    for config in configs:
        try:
            known |= set(parse_tracks(config["strategies"]))
        except ValueError:  # an unreadable track list: the rows will tell
            return
    if baseline not in known:
        raise ValueError(f"unknown baseline {baseline!r}; the runs compare {sorted(known)} "
                         "(choose one with --baseline)")


def default_out_dir(run_dirs: Sequence[Path]) -> Path:
    """The run folder itself for one run; ``<first run>/../report-<timestamp>`` for several."""
    if len(run_dirs) == 1:
        return run_dirs[0]
    return run_dirs[0].resolve().parent / f"report-{time.strftime('%Y%m%d-%H%M%S')}"


def build_task_reports(runs: Sequence[Run], baseline: str, profile: Any = None,
                       bootstrap_seed: int = 0, n_resamples: int = N_RESAMPLES
                       ) -> list[TaskReport]:
    """One ``TaskReport`` per task found in the runs' rows."""
    by_task: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        for task in dict.fromkeys(row["task"] for row in run.rows):
            by_task[task].append(run)
    reports = []
    for task, task_runs in by_task.items():
        spec = get_task(task).metric_spec
        rows = [row for run in task_runs for row in run.rows if row["task"] == task]
        add_derived(rows, profile)
        tracks = resolve_tracks([run.config for run in task_runs if
                                 run.config.get("task", task) == task],
                                dict.fromkeys(row["strategy"] for row in rows))
        report = TaskReport(task, spec, rows, [run.path.name for run in task_runs], tracks,
                            baseline, bootstrap_seed, n_resamples)
        report.repeated = _repeated_across_runs(task_runs, task)
        reports.append(report)
    return reports


def _repeated_across_runs(runs: Sequence[Run], task: str) -> int:
    """How many (seed, version, strategy, user) of a task appear in more than one run."""
    seen: dict[tuple, set[Path]] = defaultdict(set)
    for run in runs:
        for row in run.rows:
            if row["task"] == task:
                seen[(row["seed"], row["version"], row["strategy"], row["user"])].add(run.path)
    return sum(len(paths) > 1 for paths in seen.values())


def write_full_report(run_dirs: Sequence[str | Path], out_dir: str | Path | None = None,
                      baseline: str = DEFAULT_BASELINE, device_profile: str | None = None,
                      profiles_path: Path | None = None, progress: bool = True,
                      bootstrap_seed: int = 0) -> Path:
    """Write ``report.md``, ``summary.csv``, ``paired.csv`` and the figures of one or several
    run folders; returns the Markdown path.

    Usage: ``swapfl report results/<run> [results/<other run>…] [--baseline global]
    [--out DIR] [--device-profile low-end-phone]``. Runs may mix tasks (one section each)
    and strategies (absent ones are just absent). Bad input fails before any slow work: a
    missing rows.jsonl (FileNotFoundError), an empty file, a bad line (file:line), an
    unknown baseline or device profile (ValueError listing the known ones)."""
    run_dirs = [Path(d) for d in run_dirs]
    if not run_dirs:
        raise ValueError("no run folder given; e.g. swapfl report results/<run>")
    for run_dir in run_dirs:
        rows_path(run_dir)
    profile = load_device_profile(device_profile, profiles_path)
    _check_baseline_in_configs(baseline, [read_config(d) for d in run_dirs])
    runs = load_runs(run_dirs, progress=progress)
    _check_baseline(baseline, runs)
    return _render(runs, Path(out_dir) if out_dir else default_out_dir(run_dirs), baseline,
                   profile, bootstrap_seed)


def _render(runs: Sequence[Run], out_dir: Path, baseline: str, profile: Any,
            bootstrap_seed: int) -> Path:
    reports = build_task_reports(runs, baseline, profile, bootstrap_seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_csv(out_dir / "summary.csv", _summary_lines(reports),
               ("task", "version", "version-index", "strategy", "users", "seeds"))
    _write_csv(out_dir / "paired.csv", _paired_lines(reports), PAIRED_HEADER)
    lines = ["# swapfl report", "",
             f"Runs: {', '.join(str(run.path) for run in runs)}. Baseline: {baseline}."
             + (f" Device profile: {profile.name}." if profile is not None else ""), "",
             *_conventions(reports)]
    for report in reports:
        lines += _task_section(report, out_dir, profile)
    lines += failures_section(runs)
    md = out_dir / "report.md"
    md.write_text("\n".join(lines).rstrip("\n") + "\n")
    return md


def failures_section(runs: Sequence[Run]) -> list[str]:
    """Devices that missed or failed a version (``failures.jsonl``: the run went on without
    their rows), counted per run, version, strategy and status."""
    counts: dict[tuple[str, str, int, str, str], dict[tuple[int, int], int]] = defaultdict(dict)
    for run in runs:
        path = run.path / "failures.jsonl"
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                key = (run.path.name, record["version"], int(record.get("seed", 0)),
                       record.get("strategy", "all"), record["status"])
                # a node running several devices: one record per failed device, or one with
                # the count of devices for a missed node
                where = (int(record["node"]), int(record.get("device", -1)))
                counts[key][where] = int(record.get("devices", 1))
    if not counts:
        return []
    lines = [[run, version, str(seed), strategy, status, str(sum(devices.values()))]
             for (run, version, seed, strategy, status), devices in sorted(counts.items())]
    return ["## Device failures", "", "Devices that were offline, did not reply in time "
            "(missed) or replied with an error (failed); the run went on, and each such device "
            "swapped from its last completed version at the next one. Details (Flower node id, "
            "error type) in each run's failures.jsonl.", "",
            *_table(["run", "version", "seed", "strategy", "status", "devices"], lines)]


def write_report(run_dir: str | Path) -> Path:
    """Write ``table.md`` (the short table ``swapfl run`` prints) and the run's full report
    (``report.md``, CSVs, figures) beside rows.jsonl; returns the path of ``table.md``.

    The paired comparison uses ``global`` as the baseline, or the run's first strategy when
    it has no ``global`` track."""
    run_dir = Path(run_dir)
    runs = load_runs([run_dir], progress=False)
    rows = runs[0].rows
    strategies = orders(rows)[1]
    baseline = DEFAULT_BASELINE if DEFAULT_BASELINE in strategies else strategies[0]
    _render(runs, run_dir, baseline, None, 0)
    md = run_dir / "table.md"
    blocks = []
    for task in dict.fromkeys(row["task"] for row in rows):
        task_rows = [row for row in rows if row["task"] == task]
        spec = get_task(task).metric_spec
        seeds = len({row["seed"] for row in task_rows})
        blocks.append(
            f"Task {task}: mean ± std over users "
            + (f"({seeds} seeds; each user averaged over them first)" if seeds > 1
               else "(1 seed)")
            + f"; primary metric {spec.primary} "
            f"({_direction(spec, spec.primary)} is better). {FLOP_CONVENTION}\n\n"
            + markdown_table(task_rows) + "\n"
            + "".join(f"\n- {note}" for note in cost_notes(task_rows)))
    md.write_text("\n\n".join(blocks) + "\n\nFull report with intervals, paired differences "
                  "and figures: report.md\n")
    return md
