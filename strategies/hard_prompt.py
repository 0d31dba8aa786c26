"""``hard-prompt``: PerPLM's writer-specific hard prompt — no training, longer inputs.

Every text the device scores is encoded as ``context [SEP] text``, where the context is the
user's own most similar past texts (BM25 over the fine-tune history, ``strategies.retrieval``),
most similar last, within ``max-length`` tokens in all. The head is the released global head
with θ = 1: whatever personalization there is comes from the prompt alone.

Costs. ``fit`` only installs θ = 1: no forward, no gradient, nothing learned, so the strategy
counts as doing no local work (like ``global``). The price is paid at inference, on every
input, as ``extra-inference-tokens`` (the mean number of context tokens added per encoded text;
on GloVe, context words averaged in). Inference forwards are not charged to
``forward-flops``: that column holds fit-time work for every strategy, and no other strategy's
prediction forwards are counted either.

The track stores θ only. The retrieval index holds the user's private texts, so it is rebuilt
from the device's own data at every ``predict`` and dropped afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from strategies.base import CostReport, LocalStrategy, StrategyConfig, TrackState
from strategies.registry import register
from strategies.retrieval import HistoryRetriever
from strategies.training_loop import TunableScorer
from tasks.base import Examples, UserData
from tasks.release import ReleasedModel

TUNED_VERSION = "tuned-version"


@dataclass
class HardPromptConfig(StrategyConfig):
    k: int = 4  # past texts retrieved per input
    max_length: int = 128  # tokens in all (context + text); the text keeps its own budget

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"hard-prompt option k must be >= 1 (the number of past texts "
                             f"prepended), got {self.k}; use the 'global' strategy for none")
        if self.max_length < 2:
            raise ValueError(f"hard-prompt option max-length must be >= 2 tokens, got "
                             f"{self.max_length}")


@register("hard-prompt", config=HardPromptConfig)
class HardPrompt(LocalStrategy):
    """PerPLM hard prompt: the user's most similar past texts (BM25) prepended; θ = 1."""

    does_local_work = False  # no forward or gradient at fit time; the cost is at inference

    def fit(
        self, state: TrackState, new_model: ReleasedModel, data: UserData,
        rng: np.random.Generator,
    ) -> tuple[TrackState, CostReport]:
        theta = np.ones(new_model.dim, dtype=np.float32)
        return TrackState({"theta": theta}, {TUNED_VERSION: new_model.version}), CostReport()

    def predict(
        self, state: TrackState, model: ReleasedModel, data: UserData, batch: Examples,
        cost: CostReport | None = None,
    ) -> np.ndarray:
        if state.meta.get(TUNED_VERSION) != model.version:
            return super().predict(state, model, data, batch, cost)  # forked, not installed yet
        docs = np.asarray(batch.documents(), dtype=np.int64)
        if len(docs) == 0:
            return np.zeros((len(batch), model.head.n_outputs), dtype=np.float32)
        retriever = HistoryRetriever(k=self.config.k).fit(data)
        encoder = model.backbone.tunable([data.texts[i] for i in docs],
                                         retriever.contexts(docs, training=False),
                                         self.config.max_length)
        scorer = TunableScorer(encoder, docs, len(data.texts), model.head, state.theta)
        with torch.no_grad():
            logits = scorer.eval()(batch)
        if cost is not None:
            cost.extra_inference_tokens = float(np.mean(encoder.extra_tokens))
        return logits.numpy()
