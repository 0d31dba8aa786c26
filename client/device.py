"""The virtual device: one user's private data, store and tracks (framework-free, no Flower).

The first version is personalized once by the configured first-personalization method, and
one track per compared strategy is forked from it, so every strategy is compared on identical
data and seeds. On a swap the device runs ``before_swap`` for every track while the old model
is present, then ``fit`` and evaluation on the new one. It returns metrics and costs only;
private state stays in its store. The device knows only the contracts: the task evaluates,
the strategies adapt, the store keeps.
"""

from __future__ import annotations

import logging
import zlib
from pathlib import Path

import numpy as np

from client.faults import FaultPlan
from client.store import PrivateStore
from strategies.base import CostReport, LocalStrategy, TrackState
from strategies.first_personalization import FirstPersonalization
from tasks.base import Task, UserData
from tasks.release import ReleasedModel, open_release

log = logging.getLogger(__name__)

CURRENT = "current-release"  # the release last completed, and the metrics sent for it
FIRST_PERSONALIZATION = "stage0"
TRACK_RELEASE = "release"  # a track's meta: the release it was last fitted to


def store_root(state_dir: str | Path, user: str, run: str, seed: int) -> Path:
    """Where one user's private store lives for one run and one replicate seed: runs and
    replicates never share (or overwrite) tracks, and every reader (the device, the
    cross-user analysis) finds them the same way."""
    if not run or "/" in run or run in (".", ".."):
        raise ValueError(f"run name {run!r} cannot name a store folder")
    return Path(state_dir) / user / run / f"seed-{seed}"


class Device:
    """Drives the strategies' hooks for one user; the loop lives here once."""

    def __init__(
        self, task: Task, data: UserData, user_index: int, store: PrivateStore,
        strategies: dict[str, LocalStrategy], first: FirstPersonalization, releases: Path,
        seed: int = 0, faults: FaultPlan | None = None,
    ) -> None:
        self.task, self.data, self.user_index, self.store = task, data, user_index, store
        self.strategies, self.first, self.releases = strategies, first, Path(releases)
        self.seed = seed
        self.faults = faults or FaultPlan()

    def _rng(self, track: str, version: str) -> np.random.Generator:
        key = [self.seed, self.user_index, zlib.crc32(track.encode()), zlib.crc32(version.encode())]
        return np.random.default_rng(key)

    def _track_key(self, name: str) -> str:
        return f"tracks/{name}"

    def _load(self, name: str) -> TrackState:
        arrays, meta = self.store.load(self._track_key(name))
        return TrackState(arrays, meta)

    def _save(self, name: str, state: TrackState) -> int:
        return self.store.save(self._track_key(name), state.arrays, state.meta)

    def _evaluate(self, name: str, logits: np.ndarray, state: TrackState,
                  cost: CostReport) -> dict[str, float]:
        state_bytes = self._save(name, state)
        metrics = {**self.task.evaluate(self.data.test, logits), **cost.to_metrics(),
                   "state-bytes": state_bytes}
        return {f"{name}/{key}": float(value) for key, value in metrics.items()}

    def _progress(self, name: str, version: str, metrics: dict[str, float],
                  cost: CostReport) -> None:
        primary = self.task.metric_spec.primary
        log.info("device %d %s on %s: %s %.4f, fit %.2fs", self.user_index, name, version,
                 primary, metrics[f"{name}/{primary}"], cost.fit_seconds)

    def completed(self, model: ReleasedModel) -> dict[str, float] | None:
        """The metrics this device already sent for ``model``'s version, if it completed it
        (a resumed run asks again for the version it was stopped in): the same reply again,
        without redoing the work or moving its tracks."""
        if not self.store.exists(CURRENT):
            return None
        _, current = self.store.load(CURRENT)
        if current.get("release") != model.manifest.release_id or "metrics" not in current:
            return None
        return {key: float(value) for key, value in current["metrics"].items()}

    def _complete(self, model: ReleasedModel, metrics: dict[str, float]) -> dict[str, float]:
        """Record the version as this device's current one, with the reply it sends (one
        store write: the device's progress and its reply are committed together)."""
        self.store.save(CURRENT, {}, {"release": model.manifest.release_id,
                                      "version": model.version, "metrics": metrics})
        return metrics

    def personalize(self, model: ReleasedModel) -> dict[str, float]:
        """First version: personalize once, fork every track from it, evaluate."""
        if (done := self.completed(model)) is not None:
            return done
        base, base_cost = self.first.personalize(model, self.data)
        logits = model.design(self.data, self.data.test).logits(base.theta)
        metrics = self._evaluate(FIRST_PERSONALIZATION, logits, base, base_cost)
        for name, strategy in self.strategies.items():
            rng = self._rng(name, model.version)
            state, cost = strategy.init_state(base, model, self.data, rng)
            state.meta["seed"] = int(rng.integers(2**31))
            state.meta[TRACK_RELEASE] = model.manifest.release_id
            logits = strategy.predict(state, model, self.data, self.data.test, cost)
            metrics |= self._evaluate(name, logits, state, cost)
        return self._complete(model, metrics)

    def swap(self, new_model: ReleasedModel) -> dict[str, float]:
        """A new version arrived: each track, in turn, snapshots what it needs with the model
        it was last fitted to, then adapts alone to the new one and is saved.

        Each track swaps from the release it was last fitted to (kept in its state), so a
        device whose previous swap stopped part-way (some tracks fitted, the others not)
        catches up consistently: no track is ever read with a model it was not fitted to.
        A track is written once per swap, after its fit: a crash before that leaves it at
        its old release, from which the next attempt swaps again."""
        if not self.store.exists(CURRENT):
            raise RuntimeError(
                f"device {self.user_index}: swap before any personalization; the device store "
                "has no current release (was train.personalize sent first?)"
            )
        if (done := self.completed(new_model)) is not None:
            return done
        _, current = self.store.load(CURRENT)
        metrics: dict[str, float] = {}
        for position, (name, strategy) in enumerate(self.strategies.items()):
            state = self._load(name)
            old_model = open_release(self.releases,
                                     state.meta.get(TRACK_RELEASE, current["release"]))
            state = strategy.before_swap(state, old_model, self.data)
            rng = self._rng(name, new_model.version)
            state, cost = strategy.fit(state, new_model, self.data, rng)
            state.meta.setdefault("seed", int(rng.integers(2**31)))
            state.meta[TRACK_RELEASE] = new_model.manifest.release_id
            logits = strategy.predict(state, new_model, self.data, self.data.test, cost)
            metrics |= self._evaluate(name, logits, state, cost)
            self._progress(name, new_model.version, metrics, cost)
            if position == 0 and self.faults.strikes(self.user_index, new_model.version):
                self.faults.trigger(self.store)
        return self._complete(new_model, metrics)
