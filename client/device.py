"""The virtual device: one user's private data, store and tracks (framework-free, no Flower).

One track per compared strategy, all forked from the same first personalization, so every
strategy is compared on identical data and seeds. On a swap the device runs ``before_swap``
for every track while the old model is present, then ``fit`` and evaluation on the new one.
It returns metrics and costs only; private state stays in its store.
"""

from __future__ import annotations

import logging
import zlib
from pathlib import Path

import numpy as np

from client.store import PrivateStore
from strategies.base import CostReport, LocalStrategy, TrackState
from strategies.fala.strategy import personalize_on_labels
from tasks.news_model import NewsUserData, batch_metrics
from tasks.release import ReleasedModel, open_release

log = logging.getLogger(__name__)

CURRENT = "current-release"
FIRST_PERSONALIZATION = "stage0"


class Device:
    """Drives the strategies' hooks for one user; the loop lives here once."""

    def __init__(
        self, data: NewsUserData, user_index: int, store: PrivateStore,
        strategies: dict[str, LocalStrategy], releases: Path, seed: int = 0,
        personalize_lam: float = 1e-4,
    ) -> None:
        self.data, self.user_index, self.store = data, user_index, store
        self.strategies, self.releases, self.seed = strategies, Path(releases), seed
        self.personalize_lam = personalize_lam

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

    def _evaluate(self, name: str, strategy: LocalStrategy, state: TrackState,
                  model: ReleasedModel, cost: CostReport) -> dict[str, float]:
        state_bytes = self._save(name, state)
        logits = strategy.predict(state, model, self.data, self.data.test)
        metrics = {**batch_metrics(self.data.test, logits), **cost.to_metrics(),
                   "state-bytes": state_bytes}
        return {f"{name}/{key}": float(value) for key, value in metrics.items()}

    def personalize(self, model: ReleasedModel) -> dict[str, float]:
        """First version: personalize once on labels, fork every track from it, evaluate."""
        base, base_cost = personalize_on_labels(model, self.data, self.personalize_lam)
        metrics = self._evaluate(FIRST_PERSONALIZATION, _Stage0(), base, model, base_cost)
        for name, strategy in self.strategies.items():
            rng = self._rng(name, model.version)
            state, cost = strategy.init_state(base, model, self.data, rng)
            state.meta["seed"] = int(rng.integers(2**31))
            metrics |= self._evaluate(name, strategy, state, model, cost)
        self.store.save(CURRENT, {}, {"release": model.manifest.release_id,
                                      "version": model.version})
        return metrics

    def swap(self, new_model: ReleasedModel) -> dict[str, float]:
        """A new version arrived: snapshot with the old model, then adapt every track alone."""
        if not self.store.exists(CURRENT):
            raise RuntimeError(
                f"user {self.data.user_id}: swap before any personalization; the device store "
                "has no current release (was train.personalize sent first?)"
            )
        _, current = self.store.load(CURRENT)
        old_model = open_release(self.releases, current["release"])
        for name, strategy in self.strategies.items():
            self._save(name, strategy.before_swap(self._load(name), old_model, self.data))
        metrics: dict[str, float] = {}
        for name, strategy in self.strategies.items():
            rng = self._rng(name, new_model.version)
            state, cost = strategy.fit(self._load(name), new_model, self.data, rng)
            state.meta.setdefault("seed", int(rng.integers(2**31)))
            metrics |= self._evaluate(name, strategy, state, new_model, cost)
            log.info("device %d %s on %s: auc %.4f, fit %.2fs", self.user_index, name,
                     new_model.version, metrics[f"{name}/auc"], cost.fit_seconds)
        self.store.save(CURRENT, {}, {"release": new_model.manifest.release_id,
                                      "version": new_model.version})
        return metrics


class _Stage0(LocalStrategy):
    """The first personalization, evaluated as its own row (θ on the global head)."""

    def fit(self, state, new_model, data, rng):  # pragma: no cover - never swapped
        raise NotImplementedError
