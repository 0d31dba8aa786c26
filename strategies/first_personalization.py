"""The device's first personalization: how the FIRST version becomes a personal model.

On the first version there is no old model and no old logits, so no strategy can adapt yet:
the device personalizes once with a configured method, and every compared track starts from
that one state (so strategies differ only in what they do at swaps). Methods register by name
like strategies; the device knows only this contract.

``anchored-labels`` (default, the paper's "personal GloVe"): θ by logistic regression on the
user's fine-tune labels, anchored at θ = 1 (the global model) with an L2 penalty λ‖θ − 1‖²,
solved by damped Newton (the audited ``PersonalMatrix`` with ``objective="ce-labels"``). With
C classes each example gives C one-vs-rest rows (targets one-hot), the class biases stay fixed.
λ is chosen per device: fit on the earlier part of the fine-tune split for each λ of
``lam-grid``, keep the λ with the lowest task loss on its chronological tail
(``validation-fraction``), refit on the whole fine-tune split (ALGORITHMS.md, "Model
selection"). The test split is never read.
``global``: θ = 1, no personalization (an ablation: what the first fit is worth).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from strategies.base import CostReport, StrategyConfig, TrackState
from strategies.fala.ridge import PersonalMatrix, parse_lam_grid
from tasks.base import UserData, chronological_tail
from tasks.release import ReleasedModel


class FirstPersonalization(ABC):
    """Personalize the first version from the user's labels alone."""

    name: ClassVar[str] = ""
    config_class: ClassVar[type[StrategyConfig]] = StrategyConfig

    def __init__(self, config: StrategyConfig | None = None) -> None:
        self.config = config if config is not None else self.config_class()

    @abstractmethod
    def personalize(self, model: ReleasedModel, data: UserData
                    ) -> tuple[TrackState, CostReport]:
        """The personal state (at least ``theta``) on ``model`` and what it cost."""


_METHODS: dict[str, type[FirstPersonalization]] = {}


def register_first_personalization(
    name: str, config: type[StrategyConfig] = StrategyConfig
) -> Callable[[type[FirstPersonalization]], type[FirstPersonalization]]:
    def decorate(cls: type[FirstPersonalization]) -> type[FirstPersonalization]:
        if name in _METHODS:
            raise ValueError(f"first personalization {name!r} is already registered")
        cls.name, cls.config_class = name, config
        _METHODS[name] = cls
        return cls

    return decorate


def first_personalization_names() -> list[str]:
    return sorted(_METHODS)


def create_first_personalization(name: str, options: str | dict[str, Any] = ""
                                 ) -> FirstPersonalization:
    """The method ``name`` with options given as ``"lam=0.0001"`` text or a dict. Giving
    ``lam`` alone fixes λ (no per-device selection)."""
    if name not in _METHODS:
        raise ValueError(f"unknown first personalization {name!r}; registered: "
                         f"{first_personalization_names()}")
    if isinstance(options, str):
        parsed: dict[str, Any] = {}
        for item in options.split():
            key, sep, value = item.partition("=")
            if not (sep and key):
                raise ValueError(f"personalize-options item {item!r} must be key=value, "
                                 "e.g. lam=0.0001")
            parsed[key] = value
        options = parsed
    if "lam" in options and not {"lam-grid", "lam_grid"} & set(options):
        options = {**options, "lam-grid": ""}  # an explicit λ is a fixed λ, not a grid member
    cls = _METHODS[name]
    return cls(cls.config_class.from_options(options))


@dataclass
class AnchoredLabelsConfig(StrategyConfig):
    # λ per device from this grid, chosen on the held-out chronological tail of its fine-tune
    # split (lowest validation loss); "" uses the fixed ``lam``
    lam_grid: str = "0.0001 0.001 0.01 0.1 1"
    lam: float = 1e-4
    validation_fraction: float = 0.2

    def __post_init__(self) -> None:
        if self.lam <= 0:
            raise ValueError(f"lam must be > 0, got {self.lam}")
        if not 0 <= self.validation_fraction < 1:
            raise ValueError(f"validation-fraction must be in [0, 1), got "
                             f"{self.validation_fraction}")
        values = self.lam_values()
        if values is not None and min(values) <= 0:
            raise ValueError(f"lam-grid values must be > 0, got {self.lam_grid!r}")

    def lam_values(self) -> list[float] | None:
        return parse_lam_grid(self.lam_grid)


@register_first_personalization("anchored-labels", config=AnchoredLabelsConfig)
class AnchoredLabels(FirstPersonalization):
    """θ by anchored logistic regression on the user's labels (Newton, closed-form steps); λ
    chosen per device on the chronological tail of its fine-tune split, never on its test."""

    def personalize(self, model, data):
        cost = CostReport()
        with cost.timed():
            batch = data.finetune
            design = model.design(data, batch, cost)
            rows, offset = np.asarray(design.rows), np.asarray(design.offset)
            targets = model.task.label_targets(batch.labels, rows.shape[1])
            lam, selection_flops = self._select_lam(model, batch, rows, offset, targets)
            solver = self._fit(lam, rows, offset, targets)
        cost.solver_flops = int(solver.solver_flops_) + selection_flops
        cost.examples_used = len(batch)
        cost.fit_error = float(solver.fit_error_)
        cost.extra["lambda"] = lam
        return TrackState({"theta": solver.coef_.astype(np.float32)}), cost

    @staticmethod
    def _fit(lam: float, rows: np.ndarray, offset: np.ndarray, targets: np.ndarray
             ) -> PersonalMatrix:
        """Every (example, output) is one row of the logistic regression (ALGORITHMS.md)."""
        dim = rows.shape[-1]
        return PersonalMatrix(lam=lam, objective="ce-labels").fit(
            rows.reshape(-1, dim), y=targets.reshape(-1), offset=offset.reshape(-1))

    def _select_lam(self, model, batch, rows, offset, targets) -> tuple[float, int]:
        """Fit on the earlier units for every λ of the grid, keep the one with the lowest task
        loss on the later units (the validation tail). Ties keep the larger λ, the one closer
        to the global model. Without a grid or a tail the fixed ``lam`` is used."""
        grid = self.config.lam_values()
        fit_rows, tail = chronological_tail(batch, self.config.validation_fraction)
        if not grid or not len(tail):
            return self.config.lam, 0
        labels = torch.as_tensor(np.asarray(batch.labels)[tail])
        best, flops = (np.inf, 0.0), 0
        for lam in sorted(grid, reverse=True):
            solver = self._fit(lam, rows[fit_rows], offset[fit_rows], targets[fit_rows])
            flops += int(solver.solver_flops_)
            logits = rows[tail] @ solver.coef_ + offset[tail]
            loss = float(model.task.loss(torch.as_tensor(logits), labels))
            if loss < best[0]:
                best = (loss, lam)
        return float(best[1]), flops


@register_first_personalization("global")
class NoFirstPersonalization(FirstPersonalization):
    """θ = 1: start every track from the global model itself."""

    def personalize(self, model, data):
        return TrackState({"theta": np.ones(model.dim, dtype=np.float32)}), CostReport()
