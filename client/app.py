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
from tasks.release import RELEASE_FILES as FILES
from tasks.release import RELEASE_INDEX as INDEX
from tasks.release import RELEASE_ORDER as ORDER
from tasks.release import (
    ReleasedModel,
    has_release,
    install_release,
    open_release,
    read_manifest,
)

log = logging.getLogger(__name__)

app = ClientApp(mods=[uplink_guard])


def _user_of(context: Context, task: Task, data_dir: Path) -> tuple[str, int]:
    """Deployment: node-config ``user-id`` (and ``user-index``, the user's public number in
    results); simulation: partition-id -> the i-th private user."""
    users = task.private_users(data_dir)
    if "user-id" in context.node_config:
        user = str(context.node_config["user-id"])
        if user not in users:
            raise ValueError("the node config's user-id is not among the users of its data-dir")
        index = context.node_config.get("user-index", users.index(user))
        return user, int(index)
    index = int(context.node_config["partition-id"])
    if index >= len(users):
        raise ValueError(
            f"partition-id {index} but the data has {len(users)} private users; run with "
            f"num-supernodes <= users"
        )
    return users[index], index


def _state_dir(context: Context, settings: Settings) -> Path:
    return Path(str(context.node_config.get("state-dir", settings.work_dir / "devices")))


def _release_cache(context: Context, settings: Settings, user: str) -> Path:
    """The device's own release cache: the node config's ``release-cache`` (deployment),
    else a folder in the user's state."""
    default = _state_dir(context, settings) / user / "releases"
    return Path(str(context.node_config.get("release-cache", default)))


def _install(message: Message, order: ConfigRecord, cache: Path) -> tuple[Path, int]:
    """The release folder for this order and the bytes received for it: the shared store
    by reference (simulation; charged as if sent), or the device's own cache, installed from
    the message's files after verifying each sha256 (deployment)."""
    release_id = str(order["release-id"])
    if "releases" in order:
        root = Path(str(order["releases"]))
        manifest = read_manifest(root, release_id)
        return root, manifest.downlink_bytes if manifest else 0
    content = message.content
    if FILES in content.array_records:
        index = content.config_records[INDEX]
        files = {name: array.numpy().tobytes() for name, array in content[FILES].items()}
        install_release(cache, str(index["manifest"]), files,
                        dict(zip(index["names"], index["sha256"], strict=True)))
        return cache, sum(len(data) for data in files.values())
    if not has_release(cache, release_id):
        raise FileNotFoundError(f"release {release_id} is neither in this device's cache nor "
                                "in the message")
    return cache, 0


def _show_progress() -> None:
    """Route the device loop's progress lines to Flower's log handlers."""
    device_log = logging.getLogger("client")
    if not device_log.handlers:
        device_log.setLevel(logging.INFO)
        for handler in logging.getLogger("flwr").handlers:
            device_log.addHandler(handler)


def _device(message: Message, context: Context) -> tuple[Device, ReleasedModel, int]:
    _show_progress()
    order = message.content.config_records[ORDER]
    settings = Settings.from_run_config(context.run_config)
    torch.set_num_threads(settings.threads)
    node = context.node_config
    data_dir = Path(str(node.get("data-dir", settings.data_dir)))
    if not str(data_dir) or not data_dir.is_dir():
        raise FileNotFoundError("no prepared data for this device: set data-dir in the node "
                                "config (deployment) or run through `swapfl run`")
    task = get_task(settings.task)
    user, index = _user_of(context, task, data_dir)
    releases, downlink = _install(message, order, _release_cache(context, settings, user))
    data = task.load_user(data_dir, user, settings.finetune_fraction)
    seed = int(order["seed"])  # the replicate: its own randomness and its own store
    store = store_root(_state_dir(context, settings), user, str(order["run"]), seed)
    device = Device(
        task, data, index, PrivateStore(store),
        create_many(settings.strategies, settings.strategy_options),
        create_first_personalization(settings.personalize, settings.personalize_options),
        releases, seed=seed, faults=settings.faults(),
    )
    return device, open_release(releases, str(order["release-id"])), downlink


def _reply(message: Message, device: Device, metrics: dict[str, float], downlink: int) -> Message:
    metrics = {**metrics, "user-index": float(device.user_index), "downlink-bytes": float(downlink)}
    return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=message)


@app.train("personalize")
def personalize(message: Message, context: Context) -> Message:
    """First version: install it, personalize, fork one track per strategy."""
    device, model, downlink = _device(message, context)
    return _reply(message, device, device.personalize(model), downlink)


@app.train("swap")
def swap(message: Message, context: Context) -> Message:
    """A new backbone version: every track re-personalizes alone."""
    device, model, downlink = _device(message, context)
    return _reply(message, device, device.swap(model), downlink)


@app.query("release")
def holds_release(message: Message, context: Context) -> Message:
    """Whether this device's own cache holds a release already (then it is not sent again)."""
    settings = Settings.from_run_config(context.run_config)
    node = context.node_config
    data_dir = Path(str(node.get("data-dir", settings.data_dir)))
    user, _ = _user_of(context, get_task(settings.task), data_dir)
    release_id = str(message.content.config_records[ORDER]["release-id"])
    held = has_release(_release_cache(context, settings, user), release_id)
    return Message(RecordDict({"metrics": MetricRecord({"has-release": float(held)})}),
                   reply_to=message)
