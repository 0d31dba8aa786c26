"""``perplm-mlm``: PerPLM's personalized intermediate learning — ``soft-prompt`` + one stage.

Before task tuning, the writer's prompt (the same prefix reparameterization as ``soft-prompt``,
backbone frozen) is trained with a masked-LM loss on the writer's own unlabelled texts: the
texts of the fine-tune split, which the encoder was built over — never a test text. Then the
template tunes prompt + head + θ on the labels, exactly as ``soft-prompt`` does, and the track
stores the same things (θ, head, prefix). The stage runs through the shared loop
(``run_epochs``), so its forward and backward FLOPs are charged like any training.

MLM scores come from a tied decoder: a masked position with last hidden state ``h`` scores
vocabulary word w by ``h · E_w``, E the backbone's (frozen) input word-embedding table. The
released backbones ship no masked-LM head — all-MiniLM-L6-v2 is a sentence-transformers
checkpoint and the server's RoBERTa saves only the encoder — so there is no trained
transform or output bias to reuse. What the stage therefore teaches the prompt: make the frozen
encoder's output at a hidden token point, in the model's own input-embedding space, at the
word that was hidden, using the writer's context. It is a denoising signal on the writer's
text, not the pretraining MLM distribution; its loss values are not comparable with a
pretraining MLM loss (reported as ``mlm-loss`` for what it is: the last stage epoch's mean).
Measured on all-MiniLM-L6-v2 and a few short English sentences: ≈ 11.0 nats before the stage
(uniform over the vocabulary is 10.3 — the frozen outputs do not point at their words), 9.9
after 5 epochs at lr 1e-3 and 8.0 at lr 1e-2.

Masking: each minibatch draws fresh positions (dynamic masking, from a generator seeded by the
device's rng): each non-special, non-padding token with probability ``mask-probability``, and
at least one per text. Every chosen token becomes the mask token (no 80/10/10): that split
protects representations of *unmasked* tokens in a model whose weights are fine-tuned
afterwards; here the backbone is frozen and the scores read only masked positions. The stage
runs a fixed ``mlm-epochs`` epochs without early stopping; what is kept in the end is chosen
by the task stage's own validation tail.

On GloVe (no layers) there is neither prompt nor stage: head and θ only (``head-only`` = 1).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn import functional

from backbones.base import TunableEncoder
from strategies.base import CostReport
from strategies.registry import register
from strategies.soft_prompt import SoftPrompt, SoftPromptOptions
from strategies.training_loop import LoopConfig, LoopResult, TunableScorer, run_epochs
from tasks.base import UserData
from tasks.release import ReleasedModel


@dataclass
class PerplmMlmOptions(SoftPromptOptions):
    mlm_epochs: int = field(default=3, metadata={"help": "epochs of the masked-LM stage"})
    mask_probability: float = field(default=0.15, metadata={
        "help": "share of a text's tokens masked (at least one per text)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mlm_epochs < 1:
            raise ValueError(f"mlm_epochs must be >= 1, got {self.mlm_epochs}")
        if not 0 < self.mask_probability < 1:
            raise ValueError(f"mask_probability must be in (0, 1), got {self.mask_probability}")

    def mlm_loop(self) -> LoopConfig:
        """The shared loop's options for the stage: these options (steps, batch size) with
        ``mlm-epochs`` epochs and no validation tail (a fixed stage, no early stopping)."""
        return dataclasses.replace(self, epochs=self.mlm_epochs, validation_fraction=0.0)


def choose_masked(input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  special_ids: tuple[int, ...], probability: float,
                  rng: np.random.Generator) -> torch.Tensor:
    """(n, T) bool: positions to mask — each real, non-special token with ``probability``,
    and one drawn uniformly among them for a text that got none (texts with no such token
    get none)."""
    eligible = attention_mask.bool() & ~torch.isin(input_ids,
                                                    torch.tensor(special_ids, dtype=torch.long))
    chosen = eligible & torch.from_numpy(rng.random(tuple(input_ids.shape)) < probability)
    for row in torch.nonzero(eligible.any(1) & ~chosen.any(1)).flatten().tolist():
        candidates = torch.nonzero(eligible[row]).flatten()
        chosen[row, candidates[int(rng.integers(len(candidates)))]] = True
    return chosen


def masked_lm_loss(encoder: TunableEncoder, rows: torch.Tensor, chosen: torch.Tensor
                   ) -> torch.Tensor:
    """Mean cross-entropy of the hidden tokens of texts ``rows`` under the tied decoder.

    ``chosen`` (len(rows), ≥ width) marks the masked positions of each text; a batch without
    any gives a constant 0 (nothing to learn)."""
    if encoder.mask_token_id is None:
        raise ValueError("perplm-mlm needs a tokenizer with a mask token; this backbone's has "
                         "none")
    mask = encoder.attention_mask[rows]
    width = max(int(mask.sum(1).max()), 1)
    ids, mask, chosen = encoder.input_ids[rows, :width], mask[:, :width], chosen[:, :width]
    if not chosen.any():
        return torch.zeros(())
    hidden = encoder.hidden_states(ids.masked_fill(chosen, encoder.mask_token_id), mask)
    scores = hidden[chosen] @ encoder.input_embeddings().weight.T
    return functional.cross_entropy(scores, ids[chosen])


def train_masked_lm(scorer: TunableScorer, loop: LoopConfig, probability: float,
                    rng: np.random.Generator, cost: CostReport) -> LoopResult | None:
    """Train the prompt of ``scorer``'s encoder by masked LM on all the encoder's texts
    through the shared loop; charge FLOPs and forwards to ``cost``. None without layers.

    The loop gets the whole scorer, as in task tuning, so the prompt steps exactly as it
    will there; the head and θ receive no gradient from this loss and stay as they are."""
    encoder = scorer.encoder
    if not encoder.has_layers:
        return None
    masking = np.random.default_rng(int(rng.integers(2**63)))

    def minibatch_loss(indices: np.ndarray) -> torch.Tensor:
        rows = torch.as_tensor(indices)
        chosen = choose_masked(encoder.input_ids[rows], encoder.attention_mask[rows],
                               encoder.special_ids, probability, masking)
        cost.backbone_forwards += len(rows)
        return masked_lm_loss(encoder, rows, chosen)

    return run_epochs(scorer, encoder.n_texts, minibatch_loss, loop, rng, cost)


@register("perplm-mlm", config=PerplmMlmOptions)
class PerplmMlm(SoftPrompt):
    """PerPLM intermediate learning: the soft prompt first learns the writer's text (MLM)."""

    extra_metrics = (*SoftPrompt.extra_metrics, "mlm-loss")

    def before_training(self, scorer: TunableScorer, model: ReleasedModel, data: UserData,
                        rng: np.random.Generator, cost: CostReport) -> None:
        result = train_masked_lm(scorer, self.config.mlm_loop(),
                                 self.config.mask_probability, rng, cost)
        if result is not None:
            cost.extra["mlm-loss"] = result.train_loss
