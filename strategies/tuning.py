"""``EncoderTuning``: the template every gradient strategy fills in (top, full, adapter, LoRA,
soft prompts, PerPLM, OPPU).

``fit`` builds a ``TunableScorer`` (a private copy of the new backbone over the user's
fine-tune texts + a copy of the released head + θ = 1), lets the strategy declare what trains
(``make_trainable``), runs the shared loop, and keeps only what was trained: θ, the head, and
the encoder's trainable tensors (LoRA / adapter / prefix weights — the whole backbone only for
``full``). ``predict`` rebuilds the same structure over the texts it scores and loads them.
A strategy overrides hooks, never the loop:

- ``make_trainable(encoder, training)`` — required: unfreeze or attach modules;
- ``contexts(model, data, docs, training)`` — text prepended to each input (retrieval);
- ``before_training(scorer, model, data, rng, cost)`` — an extra stage (PerPLM's masked LM);
- ``encoder_arrays`` / ``load_encoder_arrays`` — what of the encoder is stored.

On a backbone without layers (GloVe) there is nothing to attach: every such strategy tunes the
head and θ only, and its rows say so (``head-only`` = 1).
"""

from __future__ import annotations

import copy
from abc import abstractmethod
from collections.abc import Sequence

import numpy as np
import torch

from backbones.base import TunableEncoder
from strategies.base import CostReport, LocalStrategy, TrackState
from strategies.training_loop import (
    LOOP_METRICS,
    LoopConfig,
    TunableScorer,
    load_module_arrays,
    module_arrays,
    train_examples,
)
from tasks.base import Examples, UserData
from tasks.release import ReleasedModel

ENCODER = "encoder."
HEAD = "head."


class EncoderTuning(LocalStrategy):
    """Base of the strategies that adapt by gradient on the user's labelled fine-tune split."""

    config_class = LoopConfig
    extra_metrics = (*LOOP_METRICS, "head-only")

    # -- hooks -------------------------------------------------------------------------------

    def build_encoder(self, model: ReleasedModel, texts: Sequence[str],
                      contexts: Sequence[str] | None) -> TunableEncoder:
        """A private encoder over ``texts`` (default: the whole backbone, frozen)."""
        return model.backbone.tunable(texts, contexts,
                                      getattr(self.config, "max_length", None))

    def contexts(self, model: ReleasedModel, data: UserData, docs: np.ndarray,
                 training: bool) -> list[str] | None:
        """Text prepended to each of ``docs`` (None: plain texts)."""
        return None

    @abstractmethod
    def make_trainable(self, encoder: TunableEncoder, training: bool) -> None:
        """Unfreeze or attach what this strategy trains (``training`` False when predict
        only rebuilds the structure to load stored weights into)."""

    def before_training(self, scorer: TunableScorer, model: ReleasedModel, data: UserData,
                        rng: np.random.Generator, cost: CostReport) -> None:
        """A stage before task tuning (default: none)."""

    def encoder_arrays(self, encoder: TunableEncoder) -> dict[str, np.ndarray]:
        """What of the encoder the track stores: its trainable tensors."""
        return {name: p.detach().numpy().copy()
                for name, p in encoder.trainable_parameters().items()}

    def load_encoder_arrays(self, encoder: TunableEncoder,
                            arrays: dict[str, np.ndarray]) -> None:
        params = encoder.trainable_parameters()
        if set(params) != set(arrays):
            raise ValueError(f"{self.name}: stored encoder tensors {sorted(arrays)[:3]}… do not "
                             f"match the rebuilt encoder's {sorted(params)[:3]}…")
        with torch.no_grad():
            for name, value in arrays.items():
                params[name].copy_(torch.from_numpy(np.asarray(value)))

    # -- the template --------------------------------------------------------------------------

    def scorer(self, model: ReleasedModel, data: UserData, docs: np.ndarray, theta: np.ndarray,
               training: bool) -> TunableScorer:
        contexts = self.contexts(model, data, docs, training)
        encoder = self.build_encoder(model, [data.texts[i] for i in docs], contexts)
        self.make_trainable(encoder, training)
        head = copy.deepcopy(model.head)
        head.requires_grad_(True)
        return TunableScorer(encoder, docs, len(data.doc_ids), head, theta)

    def fit(self, state, new_model, data, rng):
        cost = CostReport()
        with cost.timed():
            torch.manual_seed(int(rng.integers(2**31)))
            scorer = self.scorer(new_model, data, data.finetune.documents(),
                                 np.ones(new_model.dim, dtype=np.float32), training=True)
            encoder = scorer.encoder
            cost.backbone_forwards += encoder.setup_forwards
            cost.forward_flops += encoder.setup_flops
            self.before_training(scorer, new_model, data, rng, cost)
            result = train_examples(scorer, new_model.task, data.finetune, self.config, rng,
                                    cost)
        result.record(cost)
        cost.extra["head-only"] = float(not encoder.trainable_parameters())
        arrays = {"theta": scorer.theta.detach().numpy().copy(),
                  **module_arrays(scorer.head, HEAD),
                  **{ENCODER + k: v for k, v in self.encoder_arrays(encoder).items()}}
        return TrackState(arrays, {"tuned-version": new_model.version}), cost

    def predict(self, state: TrackState, model: ReleasedModel, data: UserData,
                batch: Examples, cost: CostReport | None = None) -> np.ndarray:
        if state.meta.get("tuned-version") != model.version:
            return super().predict(state, model, data, batch, cost)  # forked, not tuned yet
        scorer = self.scorer(model, data, batch.documents(), state.theta, training=False)
        load_module_arrays(scorer.head, state.arrays, HEAD)
        self.load_encoder_arrays(scorer.encoder, {k[len(ENCODER):]: v
                                                  for k, v in state.arrays.items()
                                                  if k.startswith(ENCODER)})
        if cost is not None and len(scorer.encoder.extra_tokens):
            cost.extra_inference_tokens = float(np.mean(scorer.encoder.extra_tokens))
        with torch.no_grad():
            return scorer.eval()(batch).numpy()
