"""``full``: fine-tune every backbone weight + the task head + θ on the user's labels.

The track stores the whole tuned backbone: its state size (``state-bytes``) is the point of
this baseline. On GloVe (no layers) it tunes the head and θ only.
"""

from __future__ import annotations

from dataclasses import dataclass

from strategies.registry import register
from strategies.training_loop import LoopConfig
from strategies.tuning import EncoderTuning


@dataclass
class FullOptions(LoopConfig):
    lr: float = 2e-5  # every backbone weight moves: BERT's fine-tuning range (2e-5 .. 5e-5)


@register("full", config=FullOptions)
class FullFineTuning(EncoderTuning):
    """Fine-tune all backbone and head parameters + θ on the user's labels."""

    def make_trainable(self, encoder, training):
        encoder.requires_grad_(True)
