"""``adapter``: Houlsby bottleneck adapters (two per layer) + the task head + θ.

peft 0.21 has no bottleneck adapter and AdapterHub's ``adapters`` cannot install beside
transformers 5, so the adapter is written here and attached by forward hooks on the encoder's
``adapter_sites`` (after the attention output projection and after the feed-forward output
projection of every layer, before the residual connection and LayerNorm, as in Houlsby et al.
2019): ``y + up(gelu(down(y)))``. ``up`` starts at zero, so an untrained adapter is the
identity and the model is exactly the released one. The backbone stays frozen (its LayerNorms
too); the track stores the adapters, the head and θ. On GloVe it tunes the head and θ only.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from strategies.registry import register
from strategies.training_loop import LoopConfig
from strategies.tuning import EncoderTuning


class BottleneckAdapter(nn.Module):
    """``x + up(gelu(down(x)))`` with ``up`` zero-initialised (identity at init)."""

    def __init__(self, width: int, bottleneck: int) -> None:
        super().__init__()
        self.down = nn.Linear(width, bottleneck)
        self.up = nn.Linear(bottleneck, width)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x):
        return x + self.up(nn.functional.gelu(self.down(x)))


def attach_adapters(encoder, bottleneck: int) -> nn.ModuleList:
    """One adapter per adapter site, registered on the encoder (so it trains and is stored)
    and applied to the site's output by a forward hook."""
    adapters = nn.ModuleList()
    for site in encoder.adapter_sites():
        adapter = BottleneckAdapter(site.out_features, bottleneck)
        site.register_forward_hook(lambda module, args, out, adapter=adapter: adapter(out))
        adapters.append(adapter)
    encoder.adapters = adapters
    return adapters


@dataclass
class AdapterOptions(LoopConfig):
    bottleneck: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.bottleneck < 1:
            raise ValueError(f"bottleneck must be >= 1, got {self.bottleneck}")


@register("adapter", config=AdapterOptions)
class AdapterTuning(EncoderTuning):
    """Houlsby bottleneck adapters (2 per layer, width 64, identity at init) + head + θ."""

    def make_trainable(self, encoder, training):
        attach_adapters(encoder, self.config.bottleneck)
