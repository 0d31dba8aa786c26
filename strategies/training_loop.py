"""The one gradient loop every strategy that trains shares (top, full, adapter, LoRA, prompts,
OPPU, and PerPLM's masked-LM stage).

A strategy only declares what is trainable; this loop does the rest once: seeded minibatches,
Adam, early stopping on a held-out chronological tail of the user's fine-tune split (never the
test split; ALGORITHMS.md, "Model selection"), restoring the best epoch's weights, and FLOP
accounting — forward and backward measured separately with ``backbones.flops.flop_counter``
(2 FLOPs per multiply-add), validation forwards included. Nothing here knows the task: batches are
``tasks.base.Examples``, the loss is the task's and logits come from the head's design.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from backbones.base import TunableEncoder
from backbones.flops import flop_counter
from strategies.base import CostReport, StrategyConfig
from tasks.base import Examples, Task, TaskHead, chronological_tail

LOOP_METRICS = ("best-epoch", "epochs-run", "validation-loss")
"""Extra metrics every loop-trained strategy reports (declare them in ``extra_metrics``)."""


class TunableScorer(nn.Module):
    """A tunable encoder over some of the user's texts + a copy of the task head + θ:
    ``forward(batch) -> (n, C)`` logits. ``docs[j]`` is the user text of encoder row j."""

    def __init__(self, encoder: TunableEncoder, docs: np.ndarray, n_docs: int,
                 head: TaskHead, theta: np.ndarray) -> None:
        super().__init__()
        self.encoder, self.head, self.n_docs = encoder, head, n_docs
        self.theta = nn.Parameter(torch.as_tensor(theta, dtype=torch.float32).clone())
        position = np.full(n_docs, -1, dtype=np.int64)
        position[docs] = np.arange(len(docs))
        self.position = torch.as_tensor(position)
        self.forwards = 0  # texts passed through the encoder (repeats counted)

    def forward(self, batch: Examples) -> torch.Tensor:
        docs = torch.as_tensor(batch.documents())
        rows = self.position[docs]
        if (rows < 0).any():
            raise IndexError("batch touches documents that were not prepared for tuning")
        pooled = self.encoder(rows)
        self.forwards += len(rows)
        features = torch.zeros(self.n_docs, pooled.shape[1]).index_copy(0, docs, pooled)
        return self.head.design(features, batch).logits(self.theta)


@dataclass
class LoopConfig(StrategyConfig):
    """Options of the shared loop (every training strategy's config extends this)."""

    epochs: int = 5
    batch_size: int = 32
    lr: float = 1e-3  # Adam step of the encoder's trainable tensors
    head_lr: float = 1e-3  # Adam step of the head and θ
    validation_fraction: float = 0.2  # chronological tail of the fine-tune split held out
    patience: int = 2  # epochs without a better validation loss before stopping

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise ValueError(f"epochs, batch_size and patience must be >= 1, got "
                             f"{self.epochs}, {self.batch_size}, {self.patience}")
        if self.lr <= 0 or self.head_lr <= 0:
            raise ValueError(f"lr and head_lr must be > 0, got {self.lr}, {self.head_lr}")
        if not 0 <= self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in [0, 1), got "
                             f"{self.validation_fraction}")


@dataclass
class LoopResult:
    train_loss: float  # mean loss of the last epoch run
    best_epoch: int  # 1-based epoch whose weights were kept
    epochs_run: int
    validation_loss: float | None = None  # at the kept epoch; None without a validation tail

    def record(self, cost: CostReport) -> None:
        cost.fit_error = self.train_loss
        cost.extra.update({"best-epoch": float(self.best_epoch),
                           "epochs-run": float(self.epochs_run)})
        if self.validation_loss is not None:
            cost.extra["validation-loss"] = self.validation_loss


def run_epochs(
    module: nn.Module, n_examples: int, minibatch_loss: Callable[[np.ndarray], torch.Tensor],
    config: LoopConfig, rng: np.random.Generator, cost: CostReport,
    validation_loss: Callable[[], torch.Tensor] | None = None,
) -> LoopResult:
    """Adam on ``module``'s trainable parameters over ``n_examples`` in seeded minibatches;
    parameters under ``encoder.`` step with ``config.lr``, the others (head, θ) with
    ``config.head_lr``.

    ``minibatch_loss(indices)`` is the mean loss of some examples; ``validation_loss()`` (if
    given) is evaluated after every epoch without gradients: the best epoch's weights are kept
    and training stops after ``patience`` epochs without improvement."""
    torch.manual_seed(int(rng.integers(2**31)))
    params = {name: p for name, p in module.named_parameters() if p.requires_grad}
    cost.trainable_params = max(cost.trainable_params, sum(p.numel() for p in params.values()))
    in_encoder = [p for n, p in params.items() if n.startswith("encoder.")]
    others = [p for n, p in params.items() if not n.startswith("encoder.")]
    groups = [{"params": group, "lr": lr}
              for group, lr in ((in_encoder, config.lr), (others, config.head_lr)) if group]
    optimizer = torch.optim.Adam(groups) if groups else None
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    train_loss, epochs_run = float("nan"), 0
    for epoch in range(1, config.epochs + 1):
        module.train()
        order = rng.permutation(n_examples)
        total = 0.0
        for start in range(0, n_examples, config.batch_size):
            take = np.sort(order[start : start + config.batch_size])
            with flop_counter() as forward:
                loss = minibatch_loss(take)
            cost.forward_flops += forward.get_total_flops()
            if optimizer is not None and loss.requires_grad:
                optimizer.zero_grad()
                with flop_counter() as backward:
                    loss.backward()
                optimizer.step()
                cost.backward_flops += backward.get_total_flops()
            total += float(loss.detach()) * len(take)
        train_loss, epochs_run = total / max(n_examples, 1), epoch
        if validation_loss is None:
            continue
        module.eval()
        with torch.no_grad(), flop_counter() as forward:
            current = float(validation_loss())
        cost.forward_flops += forward.get_total_flops()
        if best is None or current < best[0]:
            best = (current, epoch, {n: p.detach().clone() for n, p in params.items()})
        elif epoch - best[1] >= config.patience:
            break
    module.eval()
    if best is None:
        return LoopResult(train_loss, epochs_run, epochs_run)
    with torch.no_grad():
        for name, value in best[2].items():
            params[name].copy_(value)
    return LoopResult(train_loss, best[1], epochs_run, best[0])


def train_examples(
    scorer: TunableScorer, task: Task, batch: Examples, config: LoopConfig,
    rng: np.random.Generator, cost: CostReport,
) -> LoopResult:
    """The task's loss on the user's labelled examples, the chronological tail held out."""
    train_rows, valid_rows = chronological_tail(batch, config.validation_fraction)
    train = batch.subset(train_rows)
    valid = batch.subset(valid_rows) if len(valid_rows) else None

    def minibatch_loss(indices: np.ndarray) -> torch.Tensor:
        sub = train.subset(indices)
        return task.loss(scorer(sub), torch.as_tensor(sub.labels))

    def validation_loss() -> torch.Tensor:
        return task.loss(scorer(valid), torch.as_tensor(valid.labels))

    forwards_before = scorer.forwards
    result = run_epochs(scorer, len(train), minibatch_loss, config, rng, cost,
                        validation_loss if valid is not None else None)
    cost.backbone_forwards += scorer.forwards - forwards_before
    cost.examples_used = len(batch)
    return result


def module_arrays(module: nn.Module, prefix: str) -> dict[str, np.ndarray]:
    return {f"{prefix}{k}": v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def load_module_arrays(module: nn.Module, arrays: dict[str, np.ndarray], prefix: str) -> None:
    state = {k[len(prefix):]: torch.from_numpy(np.array(v)) for k, v in arrays.items()
             if k.startswith(prefix)}
    module.load_state_dict(state)
