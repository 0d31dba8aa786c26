"""``oppu``: One PEFT Per User (OPPU), encoder version.

Per user, a fresh LoRA (r 8, α 8, query/value) + the task head + θ, trained by the shared loop
on that user's fine-tune examples only. Every input is augmented through the ``contexts`` hook:

    <profile> | [label] retrieved text | … | [label] most similar text [SEP] text

The profile (``retrieval.profile_text``: label rates + top TF-IDF terms) stands in for OPPU's
LLM-written profile; the items are the user's own labelled history retrieved by BM25 (most
similar last, so a tight budget drops the profile and the least similar items first). While
training, a text sees only history earlier than its own first use (no label leaks forward);
at prediction it may see the whole fine-tune history.

"Reset per user": ``fit`` always starts from the release (the public OPPU script keeps
accumulating earlier users' data; ALGORITHMS.md says not to), and the state it returns holds
this user's LoRA matrices, head and θ only. On GloVe there are no layers for LoRA: it tunes
the head and θ on the augmented inputs (``head-only`` = 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backbones.base import TunableEncoder
from strategies.lora import LoraOptions, attach_lora
from strategies.registry import register
from strategies.retrieval import HistoryRetriever, join_context, profile_text
from strategies.tuning import EncoderTuning
from tasks.base import UserData
from tasks.release import ReleasedModel


@dataclass
class OppuConfig(LoraOptions):
    k: int = 4  # labelled history items retrieved per input
    max_length: int = 128  # tokens in all (profile + items + text); the text keeps its own

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.k < 0:
            raise ValueError(f"oppu option k must be >= 0 (retrieved items per input; 0 keeps "
                             f"the profile only), got {self.k}")
        if self.max_length < 2:
            raise ValueError(f"oppu option max-length must be >= 2 tokens, got "
                             f"{self.max_length}")


@register("oppu", config=OppuConfig)
class Oppu(EncoderTuning):
    """OPPU: a fresh per-user LoRA + head + θ on profile- and retrieval-augmented inputs."""

    def contexts(self, model: ReleasedModel, data: UserData, docs: np.ndarray,
                 training: bool) -> list[str]:
        """Profile, then the retrieved labelled items (most similar last), per document."""
        profile = profile_text(data)
        retriever = HistoryRetriever(k=self.config.k, with_labels=True).fit(data)
        return [join_context([profile, items])
                for items in retriever.contexts(np.asarray(docs), training)]

    def make_trainable(self, encoder: TunableEncoder, training: bool) -> None:
        attach_lora(encoder, self.config.r, self.config.alpha, self.config.dropout)
