"""Fault injection and recovery on one device (no Flower): a struck device stops part-way, its
store stays loadable, and at the next version every track swaps from the release it was last
fitted to."""

from __future__ import annotations

import numpy as np
import pytest

from client.device import CURRENT, TRACK_RELEASE, Device
from client.faults import FaultPlan, InjectedFault
from client.store import PrivateStore
from strategies.first_personalization import create_first_personalization
from strategies.registry import create_many

TRACKS = "fala global"


def test_strikes_are_seeded_and_follow_the_rate():
    plan = FaultPlan(rate=0.3, seed=4)
    draws = [plan.strikes(user, "bert@2") for user in range(2000)]
    assert draws == [FaultPlan(rate=0.3, seed=4).strikes(u, "bert@2") for u in range(2000)]
    assert abs(np.mean(draws) - 0.3) < 0.04
    assert draws != [FaultPlan(rate=0.3, seed=5).strikes(u, "bert@2") for u in range(2000)]
    assert not any(FaultPlan(rate=0.0).strikes(u, "x") for u in range(100))
    assert all(FaultPlan(rate=1.0).strikes(u, "x") for u in range(100))
    for bad in ({"rate": 1.5}, {"rate": -0.1}, {"mode": "explode"}):
        with pytest.raises(ValueError):
            FaultPlan(**bad)


def test_a_crash_inside_a_store_write_keeps_the_old_state(tmp_path):
    store = PrivateStore(tmp_path)
    store.save("tracks/a", {"theta": np.ones(3)}, {"v": 1})
    FaultPlan(rate=1.0, mode="crash-store").trigger(store)
    with pytest.raises(InjectedFault):
        store.save("tracks/a", {"theta": np.zeros(3)}, {"v": 2})
    arrays, meta = store.load("tracks/a")  # the old state, intact
    assert meta == {"v": 1} and arrays["theta"].tolist() == [1, 1, 1]
    assert len(list((tmp_path / "tracks").glob("a.*.safetensors"))) == 2  # the orphan
    store.before_commit = None
    store.save("tracks/a", {"theta": np.zeros(3)}, {"v": 3})
    assert len(list((tmp_path / "tracks").glob("a.*.safetensors"))) == 1  # orphan removed
    assert store.load("tracks/a")[1] == {"v": 3}


def _device(world, store, faults=None):
    task = world.models[0].task
    return Device(task, world.data, 0, store, create_many(TRACKS),
                  create_first_personalization("anchored-labels"),
                  world.settings.work_dir / "releases", seed=0, faults=faults)


@pytest.fixture()
def world(task_world):
    return task_world("aggression")


@pytest.mark.parametrize("mode", ["raise", "crash-store"])
def test_a_device_struck_mid_swap_catches_up_at_the_next_version(world, tmp_path, mode):
    glove, bert, roberta = world.models
    healthy = _device(world, PrivateStore(tmp_path / "healthy"))
    healthy.personalize(glove)
    healthy.swap(bert)
    expected = healthy.swap(roberta)

    store = PrivateStore(tmp_path / "struck")
    struck = _device(world, store, FaultPlan(rate=1.0, mode=mode))
    struck.personalize(glove)
    with pytest.raises(InjectedFault):
        struck.swap(bert)
    first, second = "fala", "global"
    assert store.load(f"tracks/{first}")[1][TRACK_RELEASE] == bert.manifest.release_id
    assert store.load(f"tracks/{second}")[1][TRACK_RELEASE] == glove.manifest.release_id
    assert store.load(CURRENT)[1]["release"] == glove.manifest.release_id
    # the next version arrives in a new message: a fresh device on the same store folder
    store = PrivateStore(tmp_path / "struck")
    caught_up = _device(world, store).swap(roberta)
    for track in (first, second):
        assert store.load(f"tracks/{track}")[1][TRACK_RELEASE] == roberta.manifest.release_id
    # global ignores history; fala swapped bert -> roberta in both devices: same numbers
    for key in (f"{second}/macro-f1", f"{first}/macro-f1"):
        assert caught_up[key] == expected[key]
