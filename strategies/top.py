"""``top``: fine-tune the backbone's top layer(s) + the task head + θ on the user's labels.

The layers below the split are run once, frozen (``Backbone.split_top``); each step runs and
differentiates the top ``layers`` only (default 1, the FaLA paper's Top-layer baseline). On
GloVe (no layers) it tunes the head and θ only.
"""

from __future__ import annotations

from dataclasses import dataclass

from strategies.registry import register
from strategies.training_loop import LoopConfig
from strategies.tuning import EncoderTuning


@dataclass
class TopOptions(LoopConfig):
    layers: int = 1  # how many of the backbone's top layers to tune

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.layers < 1:
            raise ValueError(f"top.layers must be >= 1, got {self.layers}")


@register("top", config=TopOptions)
class TopLayerTuning(EncoderTuning):
    """Fine-tune the backbone's last layer(s) + the task head + θ on the user's labels."""

    def build_encoder(self, model, texts, contexts):
        return model.backbone.split_top(texts, self.config.layers)

    def make_trainable(self, encoder, training):
        encoder.requires_grad_(True)  # the copy of the last layer (nothing on GloVe)
