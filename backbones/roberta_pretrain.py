"""The server's own RoBERTa: a byte-level BPE tokenizer and a small encoder pretrained with
masked-LM on the public corpus (no RoBERTa weights can be had offline)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import RobertaConfig, RobertaForMaskedLM, RobertaTokenizerFast

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


@dataclass
class RobertaPretrainConfig:
    vocab_size: int = 4000
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 256
    max_length: int = 64
    steps: int = 300
    batch_size: int = 32
    lr: float = 5e-4
    mask_probability: float = 0.15
    seed: int = 0

    def __post_init__(self) -> None:
        positive = ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                    "max_length", "steps", "batch_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads "
                             f"{self.num_heads}")
        if not 0 < self.mask_probability < 1:
            raise ValueError(f"mask_probability must be in (0, 1), got {self.mask_probability}")


def train_bpe_tokenizer(texts: Sequence[str], vocab_size: int, out_dir: str | Path
                        ) -> RobertaTokenizerFast:
    """Byte-level BPE trained on ``texts``, saved as a RoBERTa tokenizer in ``out_dir``."""
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(list(texts), vocab_size=vocab_size, min_frequency=2,
                            special_tokens=SPECIAL_TOKENS, show_progress=False)
    tokenizer = RobertaTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>",
                                     eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                                     mask_token="<mask>", cls_token="<s>", sep_token="</s>")
    tokenizer.save_pretrained(out_dir)
    return tokenizer


def mask_tokens(
    ids: torch.Tensor, special: torch.Tensor, tokenizer: RobertaTokenizerFast,
    probability: float, generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: of the chosen 15 %, 80 % <mask>, 10 % random token, 10 % unchanged."""
    labels = ids.clone()
    chosen = (torch.rand(ids.shape, generator=generator) < probability) & ~special
    labels[~chosen] = -100
    inputs = ids.clone()
    roll = torch.rand(ids.shape, generator=generator)
    inputs[chosen & (roll < 0.8)] = tokenizer.mask_token_id
    randomize = chosen & (roll >= 0.8) & (roll < 0.9)
    inputs[randomize] = torch.randint(len(tokenizer), ids.shape, generator=generator)[randomize]
    return inputs, labels


def pretrain_roberta(texts: Sequence[str], out_dir: str | Path, config: RobertaPretrainConfig,
                     progress: Callable[[int, float], None] | None = None) -> Path:
    """Train tokenizer + masked-LM RoBERTa on ``texts``; save the base encoder to ``out_dir``."""
    if not texts:
        raise ValueError("pretrain_roberta needs public texts, got none")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    tokenizer = train_bpe_tokenizer(texts, config.vocab_size, out_dir)
    encoded = tokenizer(list(texts), padding="max_length", truncation=True,
                        max_length=config.max_length, return_tensors="pt",
                        return_special_tokens_mask=True)
    model = RobertaForMaskedLM(RobertaConfig(
        vocab_size=len(tokenizer), hidden_size=config.hidden_size,
        num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads,
        intermediate_size=config.intermediate_size,
        max_position_embeddings=config.max_length + 2, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        type_vocab_size=1,
    ))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
    model.train()
    every = max(1, config.steps // 10)
    running = []
    for step in range(1, config.steps + 1):
        rows = torch.randint(len(texts), (config.batch_size,), generator=generator)
        inputs, labels = mask_tokens(encoded["input_ids"][rows],
                                     encoded["special_tokens_mask"][rows].bool(), tokenizer,
                                     config.mask_probability, generator)
        loss = model(input_ids=inputs, attention_mask=encoded["attention_mask"][rows],
                     labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        running.append(float(loss.detach()))
        if progress and (step % every == 0 or step == 1):
            progress(step, sum(running) / len(running))
            running = []
    model.roberta.save_pretrained(out_dir)
    return out_dir
