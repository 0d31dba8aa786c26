"""``top``: fine-tune the backbone's last layer + the task head + θ on the user's labels.

The layers below the last are run once, frozen (``Backbone.split_top``); each step runs and
differentiates the last layer only. On GloVe (no layers) it tunes the head and θ only.
"""

from __future__ import annotations

from strategies.registry import register
from strategies.training_loop import LoopConfig
from strategies.tuning import EncoderTuning


@register("top", config=LoopConfig)
class TopLayerTuning(EncoderTuning):
    """Fine-tune the backbone's last layer + the task head + θ on the user's labels."""

    def build_encoder(self, model, texts, contexts):
        return model.backbone.split_top(texts)

    def make_trainable(self, encoder, training):
        encoder.requires_grad_(True)  # the copy of the last layer (nothing on GloVe)
