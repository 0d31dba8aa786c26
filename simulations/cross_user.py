"""The cross-user matrix (FaLA Figure 2): every user's personalized model on every user's test data.

SIMULATION ONLY. This analysis runs outside the federated run and outside the privacy
boundary: it opens every user's private partition and private store on one machine, which no
device and no server ever does. It exists only to reproduce the paper's figure in simulation,
where every user's data and store happen to live on one disk.

For each compared track and the version the device stores currently hold (stores keep only
the current state, so: the run's last version), ``M[i, j]`` is the task's primary metric of
user i's track state predicting user j's test split::

    M[i, j] = task.evaluate(data_j.test,
                            strategy.predict(state_i, model, data_j, data_j.test))[primary]

The diagonal is what each device reported for itself; the off-diagonal says how much of that
is personal (a model fitted to its own user should do better on its own user's data). The
``global`` track is θ = 1 for every user, so its rows are all equal: a check on the matrix.
Strategies that read the user's history at inference (retrieval prompts) read user j's: it
is part of user j's input, as it would be on user j's device.

Users are named ``user-%03d`` by their index in the partition (as in the run's rows), never by
their private ids.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from client.device import CURRENT, store_root
from client.store import PrivateStore
from strategies.base import LocalStrategy, TrackState
from strategies.registry import create_many
from tasks.base import Task, UserData
from tasks.registry import get_task
from tasks.release import ReleasedModel, open_release

log = logging.getLogger(__name__)

PRIVACY_NOTE = (
    "Simulation only: this analysis runs outside the federated run and outside the privacy "
    "boundary. It opens every user's private partition and private store on one machine, "
    "which no device and no server ever does; it exists only to reproduce the FaLA paper's "
    "cross-user figure (Figure 2) in simulation."
)
TITLE_NOTE = "simulation only: outside the federated run and outside the privacy boundary"
ANNOTATE_MAX_USERS = 16
CONFIG_FILE = "config.json"
RUN_KEYS = ("task", "work-dir", "data-dir", "strategies", "strategy-options",
            "finetune-fraction", "seed")


def user_label(index: int) -> str:
    """A user's public name in results (its partition index), never its private id."""
    return f"user-{index:03d}"


@dataclass
class CrossUserMatrix:
    """One track's matrix: ``values[i, j]`` = metric of user i's model on user j's test data."""

    track: str
    task: str
    version: str
    metric: str
    higher_is_better: bool
    users: list[str]
    values: np.ndarray

    @property
    def own(self) -> float:
        """Mean of the diagonal: every model on its own user's test data."""
        return _nanmean(np.diag(self.values))

    @property
    def others(self) -> float:
        """Mean off the diagonal: every model on the other users' test data."""
        mask = ~np.eye(len(self.users), dtype=bool)
        return _nanmean(self.values[mask])

    @property
    def gap(self) -> float:
        """own − others (a personal model should beat others' models in the metric's
        direction: positive when higher is better, negative when lower is better)."""
        return self.own - self.others

    @property
    def own_is_better(self) -> bool | None:
        if math.isnan(self.gap):
            return None
        return self.gap > 0 if self.higher_is_better else self.gap < 0


def _nanmean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


# -- finding the run's pieces (all checks before any slow work) ------------------------------


@dataclass
class _Run:
    config: dict[str, Any]
    task: Task
    data_dir: Path
    users: list[str]  # private ids, in partition order; they never leave this module
    stores: list[PrivateStore]
    seed: int
    tracks: dict[str, LocalStrategy]
    releases: Path
    release_id: str
    version: str


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """The run's resolved run config (``results/<run>/config.json``)."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {run_dir} is not a swapfl run folder "
                                "(expected results/<run>/ with config.json and rows.jsonl)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"{path}: not JSON ({err})") from err
    missing = [key for key in RUN_KEYS if key not in config]
    if missing:
        raise ValueError(f"{path} lacks {missing}; was it written by an older swapfl?")
    return config


def run_seeds(config: dict[str, Any]) -> list[int]:
    """The run's replicate seeds: ``seeds`` (space-separated) or, in older runs, ``seed``."""
    seeds = config.get("seeds")
    if seeds is None or seeds == "" or seeds == []:
        return [int(config["seed"])]
    if isinstance(seeds, (int, float)):
        return [int(seeds)]
    if isinstance(seeds, str):
        seeds = seeds.replace(",", " ").split()
    return [int(seed) for seed in seeds]


def _choose_tracks(config: dict[str, Any], requested: Sequence[str] | str | None
                   ) -> dict[str, LocalStrategy]:
    available = create_many(str(config["strategies"]), str(config["strategy-options"]))
    if requested is None:
        return available
    if isinstance(requested, str):
        requested = requested.replace(",", " ").split()
    names = list(dict.fromkeys(requested))
    unknown = [name for name in names if name not in available]
    if unknown or not names:
        raise ValueError(f"track(s) {unknown or names} not in this run; its tracks are "
                         f"{list(available)} (config.json 'strategies')")
    return {name: available[name] for name in names}


def _open_run(run_dir: Path, strategies: Sequence[str] | str | None, seed: int | None) -> _Run:
    config = read_run_config(run_dir)
    task = get_task(str(config["task"]))
    data_dir, work_dir = Path(str(config["data-dir"])), Path(str(config["work-dir"]))
    tracks = _choose_tracks(config, strategies)
    seeds = run_seeds(config)
    if seed is None:
        seed = seeds[0]
    elif int(seed) not in seeds:
        raise ValueError(f"seed {seed} is not one of the run's seeds {seeds} "
                         f"({Path(run_dir) / CONFIG_FILE})")
    users = task.private_users(data_dir)
    if not users:
        raise ValueError(f"{data_dir}: the prepared data has no private users")

    devices = work_dir / "devices"
    run = Path(run_dir).resolve().name  # the run's name: its devices' store namespace
    missing = [user_label(i) for i, user in enumerate(users)
               if not store_root(devices, user, run, int(seed)).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"no device store for {len(missing)} of {len(users)} users ({', '.join(missing)}) "
            f"under {devices} for seed {seed}: the run's device stores were removed or live "
            f"elsewhere; point 'work-dir' in {Path(run_dir) / CONFIG_FILE} at the folder "
            "that holds devices/ and releases/"
        )
    stores = [PrivateStore(store_root(devices, user, run, int(seed))) for user in users]

    held: dict[tuple[str, str], list[str]] = {}
    for index, store in enumerate(stores):
        if not store.exists(CURRENT):
            raise FileNotFoundError(f"{user_label(index)}'s store ({store.root}) holds no "
                                    "current release: the device was never personalized")
        _, current = store.load(CURRENT)
        held.setdefault((current["release"], current["version"]), []).append(user_label(index))
        absent = [track for track in tracks if not store.exists(f"tracks/{track}")]
        if absent:
            raise ValueError(f"{user_label(index)}'s store ({store.root}) has no state for "
                             f"track(s) {absent}; it holds {_stored_tracks(store)}")
    if len(held) > 1:
        versions = "; ".join(f"{version} (release {release[:12]}): {', '.join(who)}"
                             for (release, version), who in held.items())
        raise ValueError(f"the users' stores hold different versions ({versions}); the matrix "
                         "compares one version: finish the run (every device swapped) first")
    [(release_id, version)] = held
    return _Run(config, task, data_dir, users, stores, int(seed), tracks,
                work_dir / "releases", release_id, version)


def _stored_tracks(store: PrivateStore) -> list[str]:
    return [key.removeprefix("tracks/") for key in store.keys() if key.startswith("tracks/")]


# -- the matrix -----------------------------------------------------------------------------


def _matrix(track: str, strategy: LocalStrategy, states: list[TrackState], data: list[UserData],
            model: ReleasedModel, run: _Run, bar: Any) -> CrossUserMatrix:
    spec = run.task.metric_spec
    n = len(data)
    values = np.full((n, n), np.nan)
    for i, state in enumerate(states):
        for j, data_j in enumerate(data):
            logits = strategy.predict(state, model, data_j, data_j.test)
            values[i, j] = run.task.evaluate(data_j.test, np.asarray(logits))[spec.primary]
        bar.update(1)
    return CrossUserMatrix(track, run.task.name, run.version, spec.primary, spec.higher_is_better,
                           [user_label(i) for i in range(n)], values)


def cross_user_matrices(run_dir: Path, strategies: Sequence[str] | str | None = None,
                        seed: int | None = None, progress: bool = True
                        ) -> list[CrossUserMatrix]:
    """One matrix per track for the version the stores hold (see the module docstring).

    Checks the run (config, stores, tracks, one version for all users) before any slow work."""
    run = _open_run(Path(run_dir), strategies, seed)
    model = open_release(run.releases, run.release_id)
    finetune_fraction = float(run.config["finetune-fraction"])
    n = len(run.users)
    with tqdm(total=n, desc="loading users", unit="user", disable=not progress) as bar:
        data, states = [], {track: [] for track in run.tracks}
        for user, store in zip(run.users, run.stores, strict=True):
            data.append(run.task.load_user(run.data_dir, user, finetune_fraction))
            for track in run.tracks:
                states[track].append(TrackState(*store.load(f"tracks/{track}")))
            bar.update(1)
    matrices = []
    with tqdm(total=n * len(run.tracks), desc=f"cross-user {run.version}", unit="model",
              disable=not progress) as bar:
        for track, strategy in run.tracks.items():
            bar.set_postfix_str(track)
            matrices.append(_matrix(track, strategy, states[track], data, model, run, bar))
    return matrices


# -- outputs ----------------------------------------------------------------------------------


def write_matrix_csv(matrix: CrossUserMatrix, path: Path) -> None:
    """Rows: model of user; columns: test data of user; cells: the metric."""
    with Path(path).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([f"model of user \\ test data of user ({matrix.metric})", *matrix.users])
        for user, row in zip(matrix.users, matrix.values, strict=True):
            writer.writerow([user, *(float(v) for v in row)])


def plot_heatmap(matrix: CrossUserMatrix, path: Path) -> None:
    """The matrix as a heatmap PNG (matplotlib's Agg canvas, no global pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(matrix.users)
    side = min(4.0 + 0.45 * n, 16.0)
    figure = Figure(figsize=(side + 1.5, side + 0.6))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    # the better end of the metric is always the bright end of the colour map
    image = axes.imshow(matrix.values, cmap="viridis" if matrix.higher_is_better
                        else "viridis_r", aspect="equal")
    colorbar = figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    better = "higher" if matrix.higher_is_better else "lower"
    colorbar.set_label(f"{matrix.metric} ({better} is better)")
    ticks = np.arange(n)
    axes.set_xticks(ticks, matrix.users, rotation=90 if n > 6 else 45, ha="center"
                    if n > 6 else "right", fontsize=8)
    axes.set_yticks(ticks, matrix.users, fontsize=8)
    axes.set_xlabel("test data of user")
    axes.set_ylabel("model of user")
    axes.set_title(f"{matrix.task} · {matrix.track} · {matrix.version}: cross-user "
                   f"{matrix.metric}\n({TITLE_NOTE})", fontsize=9)
    if n <= ANNOTATE_MAX_USERS:
        finite = matrix.values[np.isfinite(matrix.values)]
        middle = float(np.median(finite)) if finite.size else 0.0
        for i in range(n):
            for j in range(n):
                value = matrix.values[i, j]
                bright = (value > middle) == matrix.higher_is_better
                axes.text(j, i, "—" if math.isnan(value) else f"{value:.2f}", ha="center",
                          va="center", fontsize=7, color="black" if bright else "white")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def _number(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.4f}"


def markdown_summary(matrices: Sequence[CrossUserMatrix], files: dict[str, tuple[str, str]],
                     run_name: str, seed: int) -> str:
    """Per track: mean on own data (diagonal) vs on others' data (off-diagonal), and the gap."""
    first = matrices[0]
    better = "higher" if first.higher_is_better else "lower"
    lines = [
        f"# Cross-user matrix — {first.task}, {first.version}",
        "",
        f"> **{PRIVACY_NOTE}**",
        "",
        f"Run `{run_name}`, seed {seed}, {len(first.users)} users. Cell (i, j) is the "
        f"{first.metric} ({better} is better) of user i's personalized model on user j's "
        "test split; the diagonal is what each device reported for itself.",
        "",
        "| track | own data (diagonal) | others' data (off-diagonal) | own − others "
        "| better on own data | matrix | heatmap |",
        "|---|---:|---:|---:|---|---|---|",
    ]
    verdicts = {True: "yes", False: "no", None: "—"}
    for m in matrices:
        csv_name, png_name = files[m.track]
        lines.append(f"| {m.track} | {_number(m.own)} | {_number(m.others)} | "
                     f"{_number(m.gap)} | {verdicts[m.own_is_better]} | [csv]({csv_name}) | "
                     f"[png]({png_name}) |")
    lines += ["", "Means skip undefined cells (a metric a test split cannot define, such as an "
              "AUC over one class). With θ = 1 for every user, the `global` track's rows are "
              "all equal.", ""]
    return "\n".join(lines)


def write_cross_user(run_dir: Path, strategies: Sequence[str] | str | None = None,
                     seed: int | None = None, out_dir: Path | None = None,
                     progress: bool = True) -> Path:
    """Compute every track's matrix and write, into ``out_dir`` (default
    ``<run_dir>/cross-user/``), one CSV and one heatmap PNG per track and a Markdown summary.
    Returns the Markdown's path. Simulation only (see the module docstring)."""
    run_dir = Path(run_dir)
    chosen_seed = run_seeds(read_run_config(run_dir))[0] if seed is None else int(seed)
    matrices = cross_user_matrices(run_dir, strategies, chosen_seed, progress)
    out = Path(out_dir) if out_dir is not None else run_dir / "cross-user"
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, tuple[str, str]] = {}
    for matrix in matrices:
        stem = f"{matrix.track}-{matrix.version.replace('@', '-v')}-seed-{chosen_seed}"
        csv_name, png_name = f"{stem}.csv", f"{stem}.png"
        write_matrix_csv(matrix, out / csv_name)
        plot_heatmap(matrix, out / png_name)
        files[matrix.track] = (csv_name, png_name)
    summary = out / f"cross-user-seed-{chosen_seed}.md"
    summary.write_text(markdown_summary(matrices, files, run_dir.name, chosen_seed),
                       encoding="utf-8")
    log.info("cross-user matrices of %d track(s) written to %s", len(matrices), out)
    return summary
