"""ClientApp: a device (in simulation, a virtual node running ``devices-per-node`` devices
in turn). Handles ``train.personalize`` and ``train.swap``.

The uplink guard wraps every handler: a reply may carry metrics only. Private paths come from
the device's own side, never from the server's message: the node config (deployment:
``user-id``, ``data-dir``, ``state-dir``, optionally ``feature-cache``) or, in simulation, the
run config the data owner prepared (``data-dir``; states under ``<work-dir>/devices``;
partition-id p -> the users p*k .. p*k + k - 1). The node's public features are shared by its
devices through ``PUBLIC_FEATURES`` (public documents only).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from backbones.cache import PUBLIC_FEATURES
from client.device import Device, store_root
from client.guard import uplink_guard
from client.store import PrivateStore
from simulations.settings import Settings
from strategies.first_personalization import create_first_personalization
from strategies.registry import create_many
from strategies.schema import error_type_code
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


def _users_of(context: Context, task: Task, data_dir: Path, devices_per_node: int
              ) -> list[tuple[str, int]]:
    """The devices this node runs, as (user, public index). Deployment: the node config's
    ``user-id`` (and ``user-index``, the user's public number in results). Simulation:
    virtual node ``partition-id`` p runs the users p*k .. p*k + k - 1 of the prepared data
    (k = ``devices-per-node``; one user per node by default)."""
    users = task.private_users(data_dir)
    if "user-id" in context.node_config:
        user = str(context.node_config["user-id"])
        if user not in users:
            raise ValueError("the node config's user-id is not among the users of its data-dir")
        index = context.node_config.get("user-index", users.index(user))
        return [(user, int(index))]
    first = int(context.node_config["partition-id"]) * devices_per_node
    if first >= len(users):
        raise ValueError(
            f"partition-id {context.node_config['partition-id']} with {devices_per_node} "
            f"device(s) per node, but the data has {len(users)} private users; run with "
            f"num-supernodes <= users / devices-per-node (rounded up)")
    return [(users[i], i) for i in range(first, min(first + devices_per_node, len(users)))]


def _state_dir(context: Context, settings: Settings) -> Path:
    return Path(str(context.node_config.get("state-dir", settings.work_dir / "devices")))


def _release_cache(context: Context, settings: Settings, user: str) -> Path:
    """The device's own release cache: the node config's ``release-cache`` (deployment),
    else a folder in the user's state."""
    default = _state_dir(context, settings) / user / "releases"
    return Path(str(context.node_config.get("release-cache", default)))


def _feature_store(context: Context, settings: Settings) -> Path:
    """The node's shared store of public-document features (every virtual device of the node
    reads it): the node config's ``feature-cache``, else a folder beside the devices' states."""
    default = _state_dir(context, settings) / ".public-features"
    return Path(str(context.node_config.get("feature-cache", default)))


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


class _Node:
    """What one message needs on a node: its settings, task, data folder and the release."""

    def __init__(self, message: Message, context: Context) -> None:
        _show_progress()
        self.message, self.context = message, context
        self.order = message.content.config_records[ORDER]
        self.settings = settings = Settings.from_run_config(context.run_config)
        torch.set_num_threads(settings.threads)
        self.data_dir = Path(str(context.node_config.get("data-dir", settings.data_dir)))
        if not str(self.data_dir) or not self.data_dir.is_dir():
            raise FileNotFoundError("no prepared data for this device: set data-dir in the "
                                    "node config (deployment) or run through `swapfl run`")
        self.task = get_task(settings.task)
        self.users = _users_of(context, self.task, self.data_dir, settings.devices_per_node)
        PUBLIC_FEATURES.use(_feature_store(context, settings))

    def device(self, user: str, index: int) -> tuple[Device, ReleasedModel, int]:
        """One hosted device, its release (installed from the message if it carries it) and
        the bytes it received for it."""
        settings, order = self.settings, self.order
        releases, downlink = _install(self.message, order,
                                      _release_cache(self.context, settings, user))
        data = self.task.load_user(self.data_dir, user, settings.finetune_fraction)
        seed = int(order["seed"])  # the replicate: its own randomness and its own store
        store = store_root(_state_dir(self.context, settings), user, str(order["run"]), seed)
        device = Device(
            self.task, data, index, PrivateStore(store),
            create_many(settings.strategies, settings.strategy_options),
            create_first_personalization(settings.personalize, settings.personalize_options),
            releases, seed=seed, faults=settings.faults(),
        )
        return device, open_release(releases, str(order["release-id"])), downlink

    def run(self, work: Callable[[Device, ReleasedModel], dict[str, float]]) -> Message:
        """``work`` on every hosted device; one metrics record per device. A node that runs
        one device fails as that device (the guard turns the exception into an error reply
        naming its type); a node that runs several isolates them: a device that raises is
        reported as failed (its error type only) and the others go on."""
        records = {}
        for user, index in self.users:
            name = "metrics" if len(self.users) == 1 else f"device-{index}"
            try:
                device, model, downlink = self.device(user, index)
                metrics = {**work(device, model), "downlink-bytes": float(downlink)}
            except Exception as err:
                if len(self.users) == 1:
                    raise
                log.error("hosted device %d failed (details stay in this log)", index,
                          exc_info=True)
                metrics = {"failed": 1.0, "error-type": float(error_type_code(err))}
            records[name] = MetricRecord({**metrics, "user-index": float(index)})
        return Message(RecordDict(records), reply_to=self.message)


@app.train("personalize")
def personalize(message: Message, context: Context) -> Message:
    """First version: install it, personalize, fork one track per strategy."""
    return _Node(message, context).run(lambda device, model: device.personalize(model))


@app.train("swap")
def swap(message: Message, context: Context) -> Message:
    """A new backbone version: every track re-personalizes alone."""
    return _Node(message, context).run(lambda device, model: device.swap(model))


@app.query("release")
def holds_release(message: Message, context: Context) -> Message:
    """Whether this node's devices hold a release already (then it is not sent again)."""
    settings = Settings.from_run_config(context.run_config)
    node = context.node_config
    data_dir = Path(str(node.get("data-dir", settings.data_dir)))
    users = _users_of(context, get_task(settings.task), data_dir, settings.devices_per_node)
    release_id = str(message.content.config_records[ORDER]["release-id"])
    held = all(has_release(_release_cache(context, settings, user), release_id)
               for user, _ in users)
    return Message(RecordDict({"metrics": MetricRecord({"has-release": float(held)})}),
                   reply_to=message)
