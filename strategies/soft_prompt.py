"""``soft-prompt``: PerPLM's writer-specific soft prompt (peft prefix tuning) + head + θ.

Every layer's self-attention gets ``virtual-tokens`` extra key/value vectors that only this
writer has. During training they are produced by peft's reparameterization (P-tuning v2 /
PerPLM): a per-writer embedding of ``virtual-tokens`` rows → a two-layer tanh MLP of width
``prefix-hidden`` → the key and value prefixes of every layer. The MLP only makes the
optimization better conditioned; its output is all the model needs. So the track stores the
prefix itself — ``encoder.prefix``, shape (virtual-tokens, 2 · layers · hidden), peft's
``get_prompt_embedding_to_save`` — with the head and θ, never the MLP, and ``predict``
rebuilds the prompt without projection (a plain embedding) and loads the prefix into it.
The backbone stays frozen.

Decisions, each for a reason:

- The prefix starts at zero (peft ``init_weights="zero"``: the MLP's last layer is zero), so
  every seed starts from the same prefixes (only the MLP's hidden layer is drawn at random).
  Zero keys and values still take a share of every attention row, so the untrained model is
  near, not equal to, the released one (all-MiniLM-L6-v2, 8 virtual tokens: pooled vectors
  move by 18 % of their norm; 20 % from peft's random start, ``prefix-init = random``).
- The text keeps its own positions. peft hands the prefix to the model as a key/value cache,
  and BERT and RoBERTa then number the text's tokens after the cached ones, as in generation.
  Here that would shift every position by ``virtual-tokens`` — away from what the frozen
  model and the head saw, and past the end of the position table for a backbone whose token
  budget already fills it (the server's RoBERTa). A pre-hook on the embeddings sets the
  cache length to 0 for position numbering; attention still sees the prefix.

On GloVe (no layers) there is no attention to prefix: the strategy tunes the head and θ only
and its rows say so (``head-only`` = 1).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from peft import PeftModel, PrefixTuningConfig, TaskType, get_peft_model
from torch import nn

from backbones.base import TunableEncoder
from strategies.registry import register
from strategies.training_loop import LoopConfig
from strategies.tuning import EncoderTuning

PREFIX = "prefix"  # the stored tensor's name (the template stores it as ``encoder.prefix``)
ADAPTER = "default"  # peft's adapter name; one prompt per encoder
PREFIX_INITS = ("zero", "random")


@dataclass
class SoftPromptOptions(LoopConfig):
    virtual_tokens: int = field(default=8, metadata={"help": "prefix length at every layer"})
    prefix_hidden: int = field(default=128, metadata={
        "help": "width of the reparameterization MLP (training only; never stored)"})
    prefix_init: str = field(default="zero", metadata={
        "help": "'zero' (the MLP's last layer is zero: prefixes start at 0) or 'random' "
                "(peft's default init)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.virtual_tokens < 1:
            raise ValueError(f"virtual_tokens must be >= 1, got {self.virtual_tokens}")
        if self.prefix_hidden < 1:
            raise ValueError(f"prefix_hidden (the MLP width) must be >= 1, got "
                             f"{self.prefix_hidden}")
        if self.prefix_init not in PREFIX_INITS:
            raise ValueError(f"prefix_init must be one of {PREFIX_INITS}, got "
                             f"{self.prefix_init!r}")


def attach_prefix(encoder: TunableEncoder, virtual_tokens: int, prefix_hidden: int | None,
                  init: str = "zero") -> PeftModel | None:
    """Wrap ``encoder.model`` in a peft prefix-tuning model; return it (None without layers).

    ``prefix_hidden`` set: the trainable reparameterization (embedding → MLP → prefixes);
    None: the prefixes themselves as a plain embedding (what stored prefixes load into)."""
    if not encoder.has_layers:
        return None
    config = PrefixTuningConfig(
        task_type=TaskType.FEATURE_EXTRACTION, num_virtual_tokens=virtual_tokens,
        prefix_projection=prefix_hidden is not None, encoder_hidden_size=prefix_hidden,
        init_weights="zero" if init == "zero" else None,
    )
    with warnings.catch_warnings():
        # peft asks transformers 5 a deprecated question about gradient checkpointing; the
        # warning would repeat for every device and says nothing about this model
        warnings.simplefilter("ignore", FutureWarning)
        wrapped = get_peft_model(encoder.model, config, adapter_name=ADAPTER)
    _keep_text_positions(wrapped.get_base_model())
    encoder.model = wrapped
    return wrapped


def _keep_text_positions(base: nn.Module) -> None:
    """Number the text's tokens as without a prefix (see the module docstring)."""
    embeddings = getattr(base, "embeddings", None)
    if embeddings is None:  # not a BERT-style model: leave peft's numbering
        return

    def no_cache_offset(module: nn.Module, args: tuple, kwargs: dict[str, Any]):
        if "past_key_values_length" in kwargs:
            kwargs["past_key_values_length"] = 0
        return args, kwargs

    embeddings.register_forward_pre_hook(no_cache_offset, with_kwargs=True)


def prompt_model(encoder: TunableEncoder) -> PeftModel:
    """The prefix-tuning wrapper ``attach_prefix`` put on ``encoder``."""
    model = getattr(encoder, "model", None)
    if not isinstance(model, PeftModel):
        raise TypeError(f"{type(encoder).__name__} has no prefix prompt attached "
                        "(call attach_prefix first)")
    return model


def stored_prefix(encoder: TunableEncoder) -> np.ndarray:
    """The key/value prefixes of every layer, (virtual tokens, 2 · layers · hidden) float32:
    the MLP's output when the encoder reparameterizes, else the plain embedding."""
    with torch.no_grad():
        prefix = prompt_model(encoder).get_prompt_embedding_to_save(ADAPTER)
    return prefix.numpy().astype(np.float32, copy=True)


def load_prefix(encoder: TunableEncoder, prefix: np.ndarray) -> None:
    """Put stored prefixes into an encoder whose prompt was attached without projection."""
    prompt_encoder = prompt_model(encoder).prompt_encoder[ADAPTER]
    if prompt_encoder.prefix_projection:
        raise ValueError("stored prefixes load only into a prompt built without the MLP "
                         "(attach_prefix(..., prefix_hidden=None))")
    expected = tuple(prompt_encoder.embedding.weight.shape)
    if tuple(prefix.shape) != expected:
        raise ValueError(f"stored prefix has shape {tuple(prefix.shape)}, the rebuilt model "
                         f"expects {expected} (virtual tokens, 2 · layers · hidden): the state "
                         "was written with other options or for another backbone")
    prompt_encoder.load_prompt_embeddings(torch.from_numpy(np.asarray(prefix, np.float32)))


@register("soft-prompt", config=SoftPromptOptions)
class SoftPrompt(EncoderTuning):
    """PerPLM soft prompt: per-writer prefixes at every layer (peft prefix tuning) + head + θ."""

    def make_trainable(self, encoder: TunableEncoder, training: bool) -> None:
        attach_prefix(encoder, self.config.virtual_tokens,
                      self.config.prefix_hidden if training else None, self.config.prefix_init)

    def encoder_arrays(self, encoder: TunableEncoder) -> dict[str, np.ndarray]:
        return {PREFIX: stored_prefix(encoder)} if encoder.has_layers else {}

    def load_encoder_arrays(self, encoder: TunableEncoder,
                            arrays: dict[str, np.ndarray]) -> None:
        expected = {PREFIX} if encoder.has_layers else set()
        if set(arrays) != expected:
            raise ValueError(f"{self.name}: stored encoder tensors {sorted(arrays)} do not "
                             f"match what this backbone needs ({sorted(expected)})")
        if encoder.has_layers:
            load_prefix(encoder, arrays[PREFIX])
