"""ClientApp: a virtual device. Handles ``train.personalize`` and ``train.swap``.

The uplink guard wraps every handler: a reply may carry metrics only.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client.device import Device
from client.guard import uplink_guard
from client.store import PrivateStore
from strategies.registry import create_many
from tasks.news import load_user, private_users, split_chronological
from tasks.news_model import build_user_data
from tasks.release import open_release

log = logging.getLogger(__name__)

app = ClientApp(mods=[uplink_guard])


def _user_of(context: Context, data_dir: Path) -> tuple[str, int]:
    """Simulation: partition-id -> the i-th private user; deployment: node-config user-id."""
    users = private_users(data_dir)
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
    torch.set_num_threads(int(context.run_config.get("threads", 1)))
    data_dir = Path(str(context.node_config.get("data-dir", order["data-dir"])))
    user, index = _user_of(context, data_dir)
    news, impressions = load_user(data_dir, user)
    finetune, test = split_chronological(
        impressions, float(context.run_config.get("finetune-fraction", 0.7))
    )
    data = build_user_data(user, news, finetune, test)
    strategies = create_many(str(context.run_config["strategies"]),
                             str(context.run_config.get("strategy-options", "")))
    store = PrivateStore(Path(str(order["state-dir"])) / user)
    device = Device(data, index, store, strategies, Path(str(order["releases"])),
                    seed=int(context.run_config.get("seed", 0)),
                    personalize_lam=float(context.run_config.get("personalize-lam", 1e-4)))
    return device, order


def _reply(message: Message, device: Device, metrics: dict[str, float], downlink: int) -> Message:
    metrics = {**metrics, "user-index": float(device.user_index), "downlink-bytes": float(downlink)}
    return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=message)


@app.train("personalize")
def personalize(message: Message, context: Context) -> Message:
    """First version: install it, personalize on labels, fork one track per strategy."""
    device, order = _device(message, context)
    model = open_release(Path(str(order["releases"])), str(order["release-id"]))
    return _reply(message, device, device.personalize(model), model.manifest.downlink_bytes)


@app.train("swap")
def swap(message: Message, context: Context) -> Message:
    """A new backbone version: every track re-personalizes alone."""
    device, order = _device(message, context)
    model = open_release(Path(str(order["releases"])), str(order["release-id"]))
    return _reply(message, device, device.swap(model), model.manifest.downlink_bytes)
