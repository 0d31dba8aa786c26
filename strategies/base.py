"""The contract every local adaptation strategy implements (see DESIGN.md, "Strategy").

The device drives a strategy through four hooks; the loop over users, tracks and versions
lives once, in the device (client/device.py). A strategy never sends anything: it returns a
private ``TrackState`` (kept in the device's store) and a ``CostReport`` (metrics only).
Strategies are task-agnostic: they see a task only through ``tasks.base`` (``UserData``,
``Examples``) and the released model's personal-matrix ``design``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, get_type_hints

import numpy as np

from strategies.peak_memory import PeakMemory
from tasks.base import Examples, UserData
from tasks.release import ReleasedModel


@dataclass
class TrackState:
    """What a track keeps on the device between versions: arrays + JSON metadata."""

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def theta(self) -> np.ndarray:
        """The personal diagonal Λ = diag(θ) of the current version's head."""
        return self.arrays["theta"]

    def replace(self, arrays: dict[str, np.ndarray] | None = None, **meta: Any) -> TrackState:
        """A new state with some arrays replaced/added and some metadata updated."""
        return TrackState({**self.arrays, **(arrays or {})}, {**self.meta, **meta})


@dataclass
class CostReport:
    """Device cost of one hook call; FLOPs use the 2-FLOPs-per-multiply-add convention."""

    fit_seconds: float = 0.0
    backbone_forwards: int = 0
    forward_flops: int = 0
    backward_flops: int = 0
    solver_flops: int = 0
    trainable_params: int = 0
    examples_used: int = 0
    strong_queries: int = 0
    clusters: int = 0
    fit_error: float | None = None
    extra_inference_tokens: float = 0.0  # mean extra input tokens per text at inference
    peak_memory_bytes: int | None = None  # resident-memory growth at the fit's peak
    extra: dict[str, float] = field(default_factory=dict)

    @classmethod
    def metric_names(cls) -> tuple[str, ...]:
        """The metric names ``to_metrics`` can produce besides ``extra`` (hyphenated fields)."""
        return tuple(f.name.replace("_", "-") for f in dataclasses.fields(cls)
                     if f.name != "extra")

    def to_metrics(self) -> dict[str, float]:
        """Hyphenated metric names, finite values only (the uplink guard rejects NaN)."""
        values = dataclasses.asdict(self)
        extra = values.pop("extra")
        out = {k.replace("_", "-"): v for k, v in values.items() if v is not None}
        out.update(extra)
        return {k: v for k, v in out.items() if math.isfinite(float(v))}

    @contextmanager
    def timed(self) -> Iterator[CostReport]:
        """Add the wall time of the block to ``fit_seconds`` and keep its peak memory."""
        start = time.perf_counter()
        try:
            with PeakMemory() as peak:
                yield self
        finally:
            self.fit_seconds += time.perf_counter() - start
            if peak.bytes_ is not None:
                self.peak_memory_bytes = max(self.peak_memory_bytes or 0, peak.bytes_)


@dataclass
class StrategyConfig:
    """Base of every strategy's options; subclasses add fields and validate in __post_init__."""

    @classmethod
    def from_options(cls, options: dict[str, str]) -> StrategyConfig:
        """Build from string options (run config), converting to each field's type."""
        hints = get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, raw in options.items():
            name = key.replace("-", "_")
            if name not in names:
                valid = sorted(n.replace("_", "-") for n in names)
                raise ValueError(f"{cls.__name__} has no option {key!r}; valid: {valid or 'none'}")
            kwargs[name] = _convert(raw, hints[name], f"{cls.__name__}.{name}")
        return cls(**kwargs)


def _convert(raw: Any, hint: Any, where: str) -> Any:
    if not isinstance(raw, str):
        return raw
    text = raw.strip()
    hint_text = str(hint)
    if text.lower() in ("none", "null") and "None" in hint_text:
        return None
    if hint is bool or hint_text == "bool":
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"{where}: expected true/false, got {raw!r}")
        return text.lower() in ("true", "1", "yes")
    for kind in (int, float):
        if hint is kind or hint_text.startswith(kind.__name__):
            try:
                return kind(text)
            except ValueError as err:
                raise ValueError(f"{where}: expected {kind.__name__}, got {raw!r}") from err
    return text


class LocalStrategy(ABC):
    """A way for a device to re-personalize alone after a backbone swap.

    Hooks (called by the device, in this order over a track's life):
    ``init_state`` once on the first version (forked from the device's first personalization),
    then per swap ``before_swap`` (old model still present), ``fit`` (new model), and
    ``predict`` whenever the device evaluates.
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type[StrategyConfig]] = StrategyConfig
    does_local_work: ClassVar[bool] = True  # False only for baselines that just install
    extra_metrics: ClassVar[tuple[str, ...]] = ()  # names this strategy puts in CostReport.extra

    def __init__(self, config: StrategyConfig | None = None) -> None:
        self.config = config if config is not None else self.config_class()

    def init_state(
        self, personalized: TrackState, model: ReleasedModel, data: UserData,
        rng: np.random.Generator,
    ) -> tuple[TrackState, CostReport]:
        """Start the track from the device's first personalization (default: keep it)."""
        return personalized.replace(), CostReport()

    def before_swap(
        self, state: TrackState, old_model: ReleasedModel, data: UserData
    ) -> TrackState:
        """Snapshot what the old model knows before it is replaced (default: nothing)."""
        return state

    @abstractmethod
    def fit(
        self, state: TrackState, new_model: ReleasedModel, data: UserData,
        rng: np.random.Generator,
    ) -> tuple[TrackState, CostReport]:
        """Adapt locally to the new model; return the new state and what it cost."""

    def predict(
        self, state: TrackState, model: ReleasedModel, data: UserData, batch: Examples,
        cost: CostReport | None = None,
    ) -> np.ndarray:
        """(n, C) logits of the track's personalized model: ``z = E θ + offset``.

        ``cost``, when given, receives inference-time costs (e.g. ``extra_inference_tokens``
        of strategies that lengthen every input)."""
        return model.design(data, batch).logits(state.theta)
