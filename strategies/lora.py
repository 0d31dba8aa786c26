"""``lora``: peft LoRA on the attention query/value projections + the task head + θ.

The backbone stays frozen; the track stores the LoRA matrices (A, B per adapted projection),
the head and θ. On GloVe (no layers) it tunes the head and θ only.
"""

from __future__ import annotations

from dataclasses import dataclass

from peft import LoraConfig as PeftLoraConfig
from peft import inject_adapter_in_model

from strategies.registry import register
from strategies.training_loop import LoopConfig
from strategies.tuning import EncoderTuning


@dataclass
class LoraOptions(LoopConfig):
    r: int = 8
    alpha: float = 8.0
    dropout: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.r < 1 or self.alpha <= 0 or not 0 <= self.dropout < 1:
            raise ValueError(f"LoRA needs r >= 1, alpha > 0 and dropout in [0, 1), got r={self.r}"
                             f", alpha={self.alpha}, dropout={self.dropout}")


def attach_lora(encoder, r: int, alpha: float, dropout: float = 0.0) -> None:
    """peft LoRA (B = 0 at init: the model is unchanged) on the encoder's ``lora_targets``."""
    if not encoder.has_layers:
        return
    config = PeftLoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout,
                            target_modules=list(encoder.lora_targets))
    encoder.model = inject_adapter_in_model(config, encoder.model)


@register("lora", config=LoraOptions)
class LoraTuning(EncoderTuning):
    """peft LoRA (r 8, α 8) on query/value + the task head + θ; backbone frozen."""

    def make_trainable(self, encoder, training):
        attach_lora(encoder, self.config.r, self.config.alpha, self.config.dropout)
