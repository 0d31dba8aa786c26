"""Report figures, drawn off-screen (matplotlib's Agg backend) so reports render on a server.

The functions take plain numbers already aggregated by ``simulations.report``, not result
rows, so a figure shows exactly what the report's tables say. Every figure names its units,
its error bars and its zero-cost floor; a strategy keeps one colour in every figure of a
report (``strategy_colors``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend is chosen first)
import numpy as np  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402

from simulations.statistics import pareto_front  # noqa: E402

DPI = 130
COLUMNS = 4  # panels per row in the per-user figure
MAX_WIDTH = 16.0  # inches; wider bar figures wrap their version panels onto more rows


@dataclass(frozen=True)
class Bar:
    """One strategy's bar: its value and the half-width of its error bar (None: no bar)."""

    strategy: str
    value: float
    error: float | None = None


@dataclass(frozen=True)
class CostPoint:
    """One strategy on one version: a cost per user (0 allowed) and its quality."""

    strategy: str
    cost: float
    quality: float


def strategy_colors(strategies: Sequence[str]) -> dict[str, tuple]:
    """A stable, saturated colour per strategy (order of first appearance)."""
    palette = (*plt.get_cmap("tab10").colors, *plt.get_cmap("Dark2").colors)
    return {name: palette[i % len(palette)] for i, name in enumerate(strategies)}


def strategy_bars(path: Path, title: str, metric_label: str, error_label: str,
                  panels: Mapping[str, Sequence[Bar]], colors: Mapping[str, tuple]) -> Path:
    """One panel per version, one bar per strategy with its error bar."""
    width = max(4.0, 0.45 * max(len(bars) for bars in panels.values()) + 1.6)
    n_cols = max(1, min(len(panels), int(MAX_WIDTH // width)))
    n_rows = math.ceil(len(panels) / n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, sharey=True, squeeze=False, layout="constrained",
                             figsize=(width * n_cols, 4.2 * n_rows + 0.6))
    for ax, (version, bars) in zip(axes.ravel(), panels.items(), strict=False):
        positions = np.arange(len(bars))
        errors = [np.nan if bar.error is None else bar.error for bar in bars]
        ax.bar(positions, [bar.value for bar in bars], yerr=errors, capsize=3,
               color=[colors[bar.strategy] for bar in bars], edgecolor="black", linewidth=0.5)
        ax.set_xticks(positions, [bar.strategy for bar in bars], rotation=45, ha="right")
        ax.set_title(version)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes.ravel()[len(panels):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel(metric_label)
    fig.suptitle(f"{title}\nerror bars: {error_label}")
    return _save(fig, path)


def cost_quality(path: Path, title: str, metric_label: str, higher_is_better: bool,
                 panels: Mapping[str, Mapping[str, Sequence[CostPoint]]],
                 colors: Mapping[str, tuple]) -> Path:
    """Cost (log x) against quality, one row of panels per cost measure (keys of ``panels``:
    the x-axis label with its unit) and one column per version, Pareto front marked.

    Zero costs cannot sit on a log axis: they are drawn hollow at a floor a decade below the
    smallest positive cost, and the legend says so."""
    versions = list(dict.fromkeys(v for by_version in panels.values() for v in by_version))
    fig, axes = plt.subplots(len(panels), len(versions), squeeze=False, sharey=True,
                             layout="constrained",
                             figsize=(5.2 * len(versions) + 2.5, 4.4 * len(panels)))
    for row, (x_label, by_version) in enumerate(panels.items()):
        floor = zero_cost_floor([p.cost for points in by_version.values() for p in points])
        for col, version in enumerate(versions):
            ax = axes[row][col]
            points = by_version.get(version, ())
            if points:
                _cost_panel(ax, points, floor, higher_is_better, colors)
            ax.set_title(version)
            ax.set_xlabel(x_label)
        axes[row][0].set_ylabel(metric_label)
    direction = "higher" if higher_is_better else "lower"
    fig.suptitle(f"{title}\nPareto front: lower cost and {direction} {metric_label}")
    handles = {label: handle for ax in axes.ravel()
               for handle, label in zip(*ax.get_legend_handles_labels(), strict=True)}
    fig.legend(handles.values(), handles.keys(), loc="outside right center", fontsize="small")
    return _save(fig, path)


def _cost_panel(ax: plt.Axes, points: Sequence[CostPoint], floor: float,
                higher_is_better: bool, colors: Mapping[str, tuple]) -> None:
    xs = [p.cost if p.cost > 0 else floor for p in points]
    for point, x in zip(points, xs, strict=True):
        hollow = point.cost <= 0
        ax.scatter(x, point.quality, s=55, zorder=3, label=point.strategy,
                   color="white" if hollow else colors[point.strategy],
                   edgecolors=colors[point.strategy], linewidths=1.8 if hollow else 0.6)
    front = pareto_front(xs, [p.quality for p in points], higher_is_better)
    ax.plot([xs[i] for i in front], [points[i].quality for i in front], "k--", marker="D",
            markersize=9, markerfacecolor="none", linewidth=1, zorder=2, label="Pareto front")
    if any(p.cost <= 0 for p in points):
        ax.axvline(floor, color="grey", linestyle=":", linewidth=1,
                   label=f"zero cost (hollow), drawn at {floor:.0e}")
    ax.set_xscale("log")
    ax.grid(alpha=0.3, which="both")


def zero_cost_floor(costs: Sequence[float]) -> float:
    """Where zero costs are drawn on a log axis: a decade below the smallest positive cost."""
    positive = [c for c in costs if c > 0]
    return 10 ** (math.floor(math.log10(min(positive))) - 1) if positive else 1.0


def user_lines(path: Path, title: str, metric_label: str, versions: Sequence[str],
               series: Mapping[str, Mapping[str, Sequence[float]]],
               colors: Mapping[str, tuple]) -> Path:
    """One panel per strategy: each user's value across versions (NaN where absent) as a thin
    line, the mean over users as a thick one."""
    n_cols = min(COLUMNS, len(series))
    n_rows = math.ceil(len(series) / n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, sharex=True, sharey=True, squeeze=False,
                             layout="constrained", figsize=(3.6 * n_cols, 3.0 * n_rows + 0.8))
    positions = np.arange(len(versions))
    shown = axes.ravel()[:len(series)]
    for ax, (strategy, users) in zip(shown, series.items(), strict=True):
        values = np.array([list(v) for v in users.values()], dtype=float)
        # one collection for every user's line (one artist per user took seconds at 1,000
        # users); a NaN (a version the user has no row for) breaks a line as it does in plot
        ax.add_collection(LineCollection([np.column_stack([positions, v]) for v in values],
                                         colors=[colors[strategy]], alpha=0.35,
                                         linewidths=0.8))
        finite = np.isfinite(values)
        ax.scatter(np.broadcast_to(positions, values.shape)[finite], values[finite], s=4,
                   color=colors[strategy], alpha=0.35)
        present = np.isfinite(values).sum(axis=0)
        mean = np.where(present > 0, np.nansum(values, axis=0) / np.maximum(present, 1), np.nan)
        ax.plot(positions, mean, color="black", linewidth=2, marker="o", label="mean over users")
        ax.set_title(f"{strategy} ({len(users)} users)")
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(series):]:
        ax.set_visible(False)
    for i, ax in enumerate(shown):
        if i + n_cols >= len(series):  # the lowest panel of its column
            ax.set_xticks(positions, versions, rotation=30, ha="right")
            ax.tick_params(labelbottom=True)
            ax.set_xlabel("version")
    for ax in axes[:, 0]:
        ax.set_ylabel(metric_label)
    axes[0][0].legend(fontsize="small")
    fig.suptitle(title)
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
