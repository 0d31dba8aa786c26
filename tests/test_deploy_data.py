"""The data owner's split for a deployment: the server gets the public part only, each device
its own partition and the public catalogue, and nothing of any other user."""

from __future__ import annotations

import json

import pytest

from simulations.deploy import split_for_devices, write_users_env
from tasks.registry import get_task


@pytest.mark.parametrize("task", ["news", "aggression"])
def test_each_device_folder_holds_its_own_user_only(task_world, tmp_path, task):
    world = task_world(task)
    prepared = world.data_dir
    users = split_for_devices(prepared, task, tmp_path)
    assert users == get_task(task).private_users(prepared)
    server = tmp_path / "server" / "data"
    assert (server / "public").is_dir()
    assert not (server / "users").exists() and not (server / "partition.json").exists()
    for index, user in enumerate(users, start=1):
        data = tmp_path / f"node-{index}" / "data"
        assert json.loads((data / "partition.json").read_text())["users"] == [user]
        own = get_task(task).user_folder(data, user)
        assert sorted(p.name for p in (data / "users").iterdir()) == [own.name]
        loaded = get_task(task).load_user(data, user, 0.7)  # the device can run from it
        expected = get_task(task).load_user(prepared, user, 0.7)
        assert len(loaded.test) == len(expected.test)
    env = write_users_env(tmp_path, users)
    assert env.stat().st_mode & 0o077 == 0  # names private users: owner-only
    assert env.read_text().splitlines()[0] == f"SWAPFL_USER_1={json.dumps(users[0])}"
