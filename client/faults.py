"""Fault injection: make a chosen, seeded fraction of devices fail on purpose during a swap.

Researchers use it to see that a run survives faulty devices, and tests use it to prove that a
failed device does not disturb the others and catches up later. Whether a device is struck at a
version depends only on (seed, user index, version), so two runs with the same seed strike the
same devices and every other device's rows stay bitwise identical. Two modes:

- ``raise``: the device raises after its first track of the swap is fitted and saved (a crash
  mid-fit: some tracks are at the new version, the rest and the device's current release are
  not);
- ``crash-store``: the device's next store write stops between writing the new arrays file and
  switching the pointer to it (a crash inside the store: the old state must still load).

Either way the device's handler fails, the server records the device as failed for that version
and the run goes on; at the next version every track swaps from the release it was last fitted
to (``Device``), so the device catches up.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from client.store import PrivateStore

FAULT_MODES = ("raise", "crash-store")
_STREAM = 0xFA17  # keeps the fault draws apart from every other use of the run's seed


class InjectedFault(RuntimeError):
    """A fault the run's fault-injection option caused on purpose."""


@dataclass(frozen=True)
class FaultPlan:
    """Which devices fail at which version (``rate`` of them, seeded) and how."""

    rate: float = 0.0
    mode: str = "raise"
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"fault-rate must be in [0, 1], got {self.rate}")
        if self.mode not in FAULT_MODES:
            raise ValueError(f"fault-mode must be one of {FAULT_MODES}, got {self.mode!r}")

    def draw(self, user_index: int, version: str) -> float:
        """The device's uniform draw for ``version``: it is struck when the draw < ``rate``."""
        key = [self.seed, user_index, zlib.crc32(version.encode()), _STREAM]
        return float(np.random.default_rng(key).random())

    def strikes(self, user_index: int, version: str) -> bool:
        """Whether this device fails its swap to ``version``."""
        return self.rate > 0.0 and self.draw(user_index, version) < self.rate

    def trigger(self, store: PrivateStore) -> None:
        """Fail now (``raise``) or at the store's next write (``crash-store``)."""
        if self.mode == "raise":
            raise InjectedFault("injected fault: the device stops mid-fit")

        def crash(key: str) -> None:
            raise InjectedFault(f"injected fault: the device stops while storing {key!r}, "
                                "after writing its arrays and before switching to them")

        store.before_commit = crash
