"""The backbone contract: a text encoder the server releases and devices run frozen (or tune)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass
class TopSplit:
    """A backbone cut below its last layer, for fine-tuning only the top of it.

    ``below`` is a frozen, precomputed input to ``top`` for each text (e.g. hidden states of
    the second-to-last layer plus the attention mask); ``top`` is a trainable copy of the last
    layer(s) plus pooling that maps ``below`` to pooled vectors of size ``hidden_size``.
    ``below_flops`` are the forward FLOPs spent computing ``below`` (to be charged).
    """

    below: tuple[torch.Tensor, ...]
    top: nn.Module
    below_flops: int


class Backbone(ABC):
    """A frozen text encoder: ``encode(texts) -> (n, hidden_size)`` pooled float32 vectors.

    ``sha256`` identifies the exact weights (content hash), ``arch`` the family
    ("glove", "bert", "roberta"). FLOPs follow the 2-FLOPs-per-multiply-add convention.
    """

    arch: str
    hidden_size: int
    sha256: str

    @abstractmethod
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Pooled vectors for ``texts``, float32, shape (len(texts), hidden_size)."""

    @abstractmethod
    def encode_with_flops(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Pooled vectors and the forward FLOPs spent on each text (int64, shape (n,))."""

    @abstractmethod
    def split_top(self, texts: Sequence[str]) -> TopSplit:
        """Cut the encoder below its last layer for ``texts`` (see ``TopSplit``)."""

    def num_parameters(self) -> int:
        """Parameters of the encoder (for cost reports)."""
        return 0
