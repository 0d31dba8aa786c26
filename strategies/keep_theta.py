"""``keep-theta``: reuse the old personal θ on the new model, no local work.

The zero-cost reference every paper skips: it shows what refitting buys. It is valid because
every version's head has the same personal dimension (ALGORITHMS.md, "Baselines").
"""

from __future__ import annotations

from strategies.base import CostReport, LocalStrategy, TrackState
from strategies.registry import register


@register("keep-theta")
class KeepTheta(LocalStrategy):
    """Old personal θ unchanged on the new model: no local work after the swap."""

    does_local_work = False

    def init_state(self, personalized, model, data, rng):
        return TrackState({"theta": personalized.theta.copy()}), CostReport()

    def fit(self, state, new_model, data, rng):
        if state.theta.shape != (new_model.dim,):
            raise ValueError(f"keep-theta: the stored θ has {state.theta.shape[0]} entries, "
                             f"{new_model.version} has personal dimension {new_model.dim}")
        return TrackState({"theta": state.theta.copy()}), CostReport()
