"""The cross-user matrix (simulation-only analysis of FaLA Figure 2) on a tiny run built
without Flower: three devices personalized on GloVe and swapped to the tiny BERT, stores laid
out as the device lays them out, a minimal config.json. The diagonal must be what each device
reported; the ``global`` track (θ = 1 for everyone) must have identical rows; a broken run
must fail with a clear error before any slow work."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import simulations.cross_user as cross_user
from client.device import CURRENT, Device, store_root
from client.store import PrivateStore
from simulations.cross_user import cross_user_matrices, write_cross_user
from strategies.first_personalization import create_first_personalization
from strategies.registry import create_many
from tasks.registry import get_task

TRACKS = "global fala"
SEED = 0
RUN = "tiny-run"  # the run folder's name, which namespaces its devices' stores


@dataclass
class TinyRun:
    run_dir: Path
    work_dir: Path
    config: dict
    users: list[str]
    reported: list[dict[str, float]]  # what each device's swap returned


def _write_run(run_dir: Path, config: dict) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config))
    return run_dir


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_settings, world, releases, models) -> TinyRun:
    work = tmp_path_factory.mktemp("cross-user-work")
    # this run's own device stores; the releases are the shared tiny ones
    (work / "releases").symlink_to(Path(releases[0]).resolve(), target_is_directory=True)
    config = {**tiny_settings.to_record(), "work-dir": str(work), "data-dir": str(world),
              "strategies": TRACKS, "strategy-options": "", "seeds": f"{SEED} 5"}
    task = get_task(config["task"])
    users = task.private_users(world)
    reported = []
    for index, user in enumerate(users):
        device = Device(
            task, task.load_user(world, user, tiny_settings.finetune_fraction), index,
            PrivateStore(store_root(work / "devices", user, RUN, SEED)),
            create_many(TRACKS), create_first_personalization(tiny_settings.personalize,
                                                              tiny_settings.personalize_options),
            work / "releases", seed=SEED,
        )
        device.personalize(models[0])
        reported.append(device.swap(models[1]))
    run_dir = _write_run(tmp_path_factory.mktemp("results") / RUN, config)
    return TinyRun(run_dir, work, config, users, reported)


@pytest.fixture(scope="module")
def matrices(tiny_run):
    return {m.track: m for m in cross_user_matrices(tiny_run.run_dir, progress=False)}


def _clone(tiny_run: TinyRun, tmp_path: Path, **config) -> tuple[Path, Path]:
    """A copy of the run (its own devices/) to break; returns (run dir, devices dir)."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "releases").symlink_to((tiny_run.work_dir / "releases").resolve(),
                                   target_is_directory=True)
    shutil.copytree(tiny_run.work_dir / "devices", work / "devices")
    run_dir = _write_run(tmp_path / RUN, {**tiny_run.config, "work-dir": str(work), **config})
    return run_dir, work / "devices"


def _no_slow_work(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("slow work started before the run was checked")

    monkeypatch.setattr(cross_user, "open_release", refuse)


def test_one_square_matrix_per_track_for_the_last_version(matrices, tiny_run, models):
    assert list(matrices) == ["global", "fala"]
    n = len(tiny_run.users)
    for matrix in matrices.values():
        assert matrix.values.shape == (n, n)
        assert np.isfinite(matrix.values).all()
        assert matrix.version == models[1].version
        assert matrix.users == [f"user-{i:03d}" for i in range(n)]
        assert matrix.metric == get_task("news").metric_spec.primary


def test_diagonal_is_what_each_device_reported(matrices, tiny_run):
    for track, matrix in matrices.items():
        reported = [r[f"{track}/{matrix.metric}"] for r in tiny_run.reported]
        np.testing.assert_allclose(np.diag(matrix.values), reported, rtol=0, atol=1e-9)


def test_global_rows_are_identical_because_theta_is_one_for_everyone(matrices):
    values = matrices["global"].values
    for row in values[1:]:
        np.testing.assert_allclose(row, values[0], rtol=0, atol=1e-12)
    assert matrices["global"].gap == pytest.approx(
        np.diag(values).mean() - values[~np.eye(len(values), dtype=bool)].mean())


def test_cell_is_model_of_row_user_on_test_data_of_column_user(matrices, tiny_run, world,
                                                               tiny_settings, models):
    task = get_task("news")
    strategy = create_many(TRACKS)["fala"]
    i, j = 0, 2
    state = PrivateStore(store_root(tiny_run.work_dir / "devices", tiny_run.users[i], RUN, SEED)
                         ).load("tracks/fala")
    data_j = task.load_user(world, tiny_run.users[j], tiny_settings.finetune_fraction)
    from strategies.base import TrackState

    logits = strategy.predict(TrackState(*state), models[1], data_j, data_j.test)
    expected = task.evaluate(data_j.test, logits)[task.metric_spec.primary]
    assert matrices["fala"].values[i, j] == pytest.approx(expected, abs=1e-9)
    # personal models differ, so (unlike global) fala's rows are not all equal
    assert np.ptp(matrices["fala"].values, axis=0).max() > 0


def test_writes_csv_heatmaps_and_a_summary_that_says_simulation_only(tiny_run, tmp_path):
    summary = write_cross_user(tiny_run.run_dir, ["fala", "global"], out_dir=tmp_path,
                               progress=False)
    text = summary.read_text()
    assert "outside the federated run" in text and "outside the privacy boundary" in text
    assert "| fala |" in text and "| global |" in text
    csvs, pngs = sorted(tmp_path.glob("*.csv")), sorted(tmp_path.glob("*.png"))
    assert len(csvs) == len(pngs) == 2
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = csvs[0].read_text().splitlines()
    assert len(rows) == 1 + len(tiny_run.users)
    assert rows[0].split(",")[1:] == [f"user-{i:03d}" for i in range(len(tiny_run.users))]
    for private_id in tiny_run.users:  # results name users by index, never by private id
        assert all(private_id not in f.read_text() for f in [summary, *csvs])


def test_default_output_folder_is_inside_the_run(tiny_run, tmp_path):
    run_dir, _ = _clone(tiny_run, tmp_path)
    summary = write_cross_user(run_dir, ["global"], progress=False)
    assert summary.parent == run_dir / "cross-user" and summary.is_file()


def test_unknown_track_lists_the_runs_tracks(tiny_run, monkeypatch):
    _no_slow_work(monkeypatch)
    with pytest.raises(ValueError, match=r"nope.*not in this run.*'global', 'fala'"):
        cross_user_matrices(tiny_run.run_dir, ["nope"], progress=False)


def test_track_missing_from_the_stores_is_an_error(tiny_run, tmp_path, monkeypatch):
    run_dir, _ = _clone(tiny_run, tmp_path, strategies="global fala top")
    _no_slow_work(monkeypatch)
    with pytest.raises(ValueError, match=r"user-000.*no state for track\(s\) \['top'\]"):
        cross_user_matrices(run_dir, progress=False)


def test_removed_store_says_where_it_was_looked_for(tiny_run, tmp_path, monkeypatch):
    run_dir, devices = _clone(tiny_run, tmp_path)
    shutil.rmtree(store_root(devices, tiny_run.users[1], RUN, SEED))
    _no_slow_work(monkeypatch)
    with pytest.raises(FileNotFoundError, match=r"user-001.*removed or live\s+elsewhere"):
        cross_user_matrices(run_dir, progress=False)
    assert not store_root(devices, tiny_run.users[1], RUN, SEED).exists()  # nothing was created


def test_seed_without_stores_and_unknown_seed(tiny_run, monkeypatch):
    _no_slow_work(monkeypatch)
    with pytest.raises(FileNotFoundError, match=r"3 of 3 users.*seed 5"):
        cross_user_matrices(tiny_run.run_dir, seed=5, progress=False)
    with pytest.raises(ValueError, match=r"seed 9 is not one of the run's seeds \[0, 5\]"):
        cross_user_matrices(tiny_run.run_dir, seed=9, progress=False)


def test_mixed_versions_are_an_error(tiny_run, tmp_path, models, monkeypatch):
    run_dir, devices = _clone(tiny_run, tmp_path)
    store = PrivateStore(store_root(devices, tiny_run.users[2], RUN, SEED))
    store.save(CURRENT, {}, {"release": models[0].manifest.release_id,
                             "version": models[0].version})
    _no_slow_work(monkeypatch)
    with pytest.raises(ValueError, match=r"different versions.*glove@1.*user-002"):
        cross_user_matrices(run_dir, progress=False)
