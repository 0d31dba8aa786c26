"""ClientApp: a virtual device. Handles ``train.personalize`` and ``train.swap``.

The uplink guard wraps every handler: a reply may carry metrics only. Private paths come from
the device's own side, never from the server's message: the node config (deployment:
``user-id``, ``data-dir``, ``state-dir``) or, in simulation, the run config the data owner
prepared (``data-dir``; states under ``<work-dir>/devices``; partition-id -> the i-th user).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client.device import Device, store_root
from client.guard import uplink_guard
from client.store import PrivateStore
from simulations.settings import Settings
from strategies.first_personalization import create_first_personalization
from strategies.registry import create_many
from tasks.base import Task
from tasks.registry import get_task
from tasks.release import open_release

log = logging.getLogger(__name__)

app = ClientApp(mods=[uplink_guard])


def _user_of(context: Context, task: Task, data_dir: Path) -> tuple[str, int]:
    """Deployment: node-config ``user-id``; simulation: partition-id -> the i-th private user."""
    users = task.private_users(data_dir)
    if "user-id" in context.node_config:
        user = str(context.node_config["user-id"])
        return user, users.index(user) if user in users else -1
    index = int(context.node_config["partition-id"])
    if index >= len(users):
        raise ValueError(
            f"partition-id {index} but the data has {len(users)} private users; run with "
            f"num-supernodes <= users"
        )
    return users[index], index


def _show_progress() -> None:
    """Route the device loop's progress lines to Flower's log handlers."""
    device_log = logging.getLogger("client")
    if not device_log.handlers:
        device_log.setLevel(logging.INFO)
        for handler in logging.getLogger("flwr").handlers:
            device_log.addHandler(handler)


def _device(message: Message, context: Context) -> tuple[Device, ConfigRecord]:
    _show_progress()
    order = message.content.config_records["release"]
    settings = Settings.from_run_config(context.run_config)
    torch.set_num_threads(settings.threads)
    node = context.node_config
    data_dir = Path(str(node.get("data-dir", settings.data_dir)))
    if not str(data_dir) or not data_dir.is_dir():
        raise FileNotFoundError("no prepared data for this device: set data-dir in the node "
                                "config (deployment) or run through `swapfl run`")
    state_dir = Path(str(node.get("state-dir", settings.work_dir / "devices")))
    task = get_task(settings.task)
    user, index = _user_of(context, task, data_dir)
    data = task.load_user(data_dir, user, settings.finetune_fraction)
    seed = int(order["seed"])  # the replicate: its own randomness and its own store
    device = Device(
        task, data, index, PrivateStore(store_root(state_dir, user, seed)),
        create_many(settings.strategies, settings.strategy_options),
        create_first_personalization(settings.personalize, settings.personalize_options),
        Path(str(order["releases"])), seed=seed,
    )
    return device, order


def _reply(message: Message, device: Device, metrics: dict[str, float], downlink: int) -> Message:
    metrics = {**metrics, "user-index": float(device.user_index), "downlink-bytes": float(downlink)}
    return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=message)


@app.train("personalize")
def personalize(message: Message, context: Context) -> Message:
    """First version: install it, personalize, fork one track per strategy."""
    device, order = _device(message, context)
    model = open_release(Path(str(order["releases"])), str(order["release-id"]))
    return _reply(message, device, device.personalize(model), model.manifest.downlink_bytes)


@app.train("swap")
def swap(message: Message, context: Context) -> Message:
    """A new backbone version: every track re-personalizes alone."""
    device, order = _device(message, context)
    model = open_release(Path(str(order["releases"])), str(order["release-id"]))
    return _reply(message, device, device.swap(model), model.manifest.downlink_bytes)
