"""The backbone contract: a text encoder the server releases and devices run frozen (or tune).

Devices that adapt by gradient never reach into a model's internals: a backbone hands out a
``TunableEncoder`` — a private, frozen copy of itself over a fixed set of texts, whose
``forward(rows)`` is the trainable path from tokens to pooled vectors. A strategy decides what
becomes trainable (every weight, the last layer, LoRA on ``lora_targets``, adapters on
``adapter_sites``, prefixes through ``model``); the encoder keeps the tokens, the pooling and
the bookkeeping (FLOPs of setup work, extra tokens added by contexts).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


class TunableEncoder(nn.Module):
    """A private encoder over ``n_texts`` fixed texts: ``forward(rows) -> (len(rows), hidden)``.

    ``rows`` index the texts it was built for. Every parameter starts frozen; strategies unfreeze
    or add what they train. ``setup_flops`` are forward FLOPs spent once when the encoder was
    built (frozen layers computed ahead, GloVe means) and ``setup_forwards`` the texts they
    covered — a strategy charges both. ``extra_tokens[i]`` is how many input tokens text i has
    beyond the plain text (retrieved context, a hard prompt); 0 without contexts.

    Encoders with layers (``has_layers``) expose, for PEFT methods: ``model`` (the Hugging Face
    module the forward runs; a strategy may replace it by a wrapper such as a peft model),
    ``lora_targets`` (module names of the attention projections LoRA adapts),
    ``adapter_sites()`` (the two output projections per layer where Houlsby adapters go),
    ``input_ids`` / ``attention_mask`` (the token tensors) and ``mask_token_id``.
    """

    has_layers: bool = False
    lora_targets: tuple[str, ...] = ()

    def __init__(self, n_texts: int, extra_tokens: np.ndarray | None = None,
                 setup_flops: int = 0, setup_forwards: int = 0) -> None:
        super().__init__()
        self.n_texts = n_texts
        self.extra_tokens = (np.zeros(n_texts, dtype=np.int64) if extra_tokens is None
                             else np.asarray(extra_tokens, dtype=np.int64))
        self.setup_flops, self.setup_forwards = int(setup_flops), int(setup_forwards)

    @abstractmethod
    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        """Pooled vectors (len(rows), hidden) of the texts ``rows``."""

    def adapter_sites(self) -> list[nn.Linear]:
        """Linear layers whose outputs receive a bottleneck adapter (none without layers)."""
        return []

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        return {name: p for name, p in self.named_parameters() if p.requires_grad}


class FrozenVectors(TunableEncoder):
    """Precomputed pooled vectors, nothing to train (GloVe; any encoder without layers)."""

    def __init__(self, vectors: torch.Tensor, **bookkeeping) -> None:
        super().__init__(len(vectors), **bookkeeping)
        self.vectors = vectors

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return self.vectors[rows]


class Backbone(ABC):
    """A frozen text encoder: ``encode(texts) -> (n, hidden_size)`` pooled float32 vectors.

    ``sha256`` identifies the exact weights (content hash), ``arch`` the family
    ("glove", "bert", "roberta"). FLOPs follow the 2-FLOPs-per-multiply-add convention.
    ``max_length`` is the token budget of one plain text.
    """

    arch: str
    hidden_size: int
    sha256: str
    max_length: int

    @abstractmethod
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Pooled vectors for ``texts``, float32, shape (len(texts), hidden_size)."""

    @abstractmethod
    def encode_with_flops(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Pooled vectors and the forward FLOPs spent on each text (int64, shape (n,))."""

    @abstractmethod
    def tunable(self, texts: Sequence[str], contexts: Sequence[str] | None = None,
                max_length: int | None = None) -> TunableEncoder:
        """A private frozen copy over ``texts``; ``contexts[i]`` (may be empty) is prepended to
        text i within ``max_length`` tokens in all (the text keeps its own ``self.max_length``
        budget; the context fills the rest, its start dropped first). Pooling reads the text's
        own positions, the context acting through attention. Without layers the vectors are
        computed here (a mean over context and text words) and ``setup_flops`` charges them."""

    @abstractmethod
    def split_top(self, texts: Sequence[str], layers: int = 1) -> TunableEncoder:
        """An encoder over ``texts`` split at layer L - ``layers``: the layers below are
        computed once, frozen (their FLOPs in ``setup_flops``); the top ``layers`` are
        trainable copies."""

    def num_parameters(self) -> int:
        """Parameters of the encoder (for cost reports)."""
        return 0
