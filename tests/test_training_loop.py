"""The shared gradient loop: chronological validation tail, early stopping with the best
epoch's weights restored, FLOP and parameter accounting; and the peak-memory probe."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from strategies.base import CostReport
from strategies.peak_memory import PeakMemory
from strategies.training_loop import LoopConfig, run_epochs
from tasks.base import chronological_tail
from tasks.classification import ClassBatch
from tasks.news_model import NewsBatch


def _news(impressions: list[int]) -> NewsBatch:
    n = len(impressions)
    return NewsBatch(history=np.zeros((max(impressions) + 1, 1), dtype=np.int64),
                     candidates=np.arange(n), impression=np.asarray(impressions),
                     labels=np.zeros(n, dtype=np.float32))


def test_tail_takes_whole_impressions_from_the_end():
    batch = _news([0, 0, 0, 1, 1, 2, 2, 2, 3, 4])
    train, valid = chronological_tail(batch, 0.4)  # 2 of 5 impressions
    assert train.tolist() == [0, 1, 2, 3, 4, 5, 6, 7] and valid.tolist() == [8, 9]
    train, valid = chronological_tail(batch, 0.5)  # round(2.5) = 2 impressions
    assert valid.tolist() == [8, 9]
    assert len(chronological_tail(batch, 0.0)[1]) == 0
    assert len(chronological_tail(_news([0, 0, 0]), 0.9)[1]) == 0  # never every unit
    with pytest.raises(ValueError, match="validation fraction"):
        chronological_tail(batch, 1.0)


def test_alternatives_of_one_question_are_one_unit():
    groups = np.array([-1, 5, 5, -1, -1, 7, 7])
    batch = ClassBatch(np.arange(7), np.zeros(7, dtype=np.float32), groups)
    assert batch.units().tolist() == [0, 1, 1, 2, 3, 4, 4]
    _, valid = chronological_tail(batch, 0.2)  # 1 of 5 units: the last question, whole
    assert valid.tolist() == [5, 6]


def test_early_stopping_keeps_the_best_epoch_and_stops_after_patience():
    torch.manual_seed(0)
    module = nn.Linear(3, 1)
    x, y = torch.randn(20, 3), torch.randn(20, 1)
    validation_losses = iter([3.0, 1.0, 2.0, 2.5, 0.5])  # best at epoch 2, then worse twice
    snapshots = []

    def minibatch_loss(indices):
        return ((module(x[indices]) - y[indices]) ** 2).mean()

    def validation_loss():
        snapshots.append(module.weight.detach().clone())
        return torch.tensor(next(validation_losses))

    cost = CostReport()
    result = run_epochs(module, 20, minibatch_loss, LoopConfig(epochs=5, batch_size=8,
                                                               patience=2),
                        np.random.default_rng(0), cost, validation_loss)
    assert (result.best_epoch, result.epochs_run, result.validation_loss) == (2, 4, 1.0)
    torch.testing.assert_close(module.weight.detach(), snapshots[1])  # epoch 2's weights
    assert cost.trainable_params == 4
    assert cost.forward_flops > 0 and cost.backward_flops > 0


def test_without_a_validation_tail_every_epoch_runs():
    module = nn.Linear(2, 1)
    cost = CostReport()
    result = run_epochs(module, 4, lambda idx: module(torch.ones(len(idx), 2)).sum(),
                        LoopConfig(epochs=3), np.random.default_rng(1), cost)
    assert (result.best_epoch, result.epochs_run, result.validation_loss) == (3, 3, None)


@pytest.mark.parametrize("options", [{"epochs": 0}, {"lr": 0}, {"validation_fraction": 1.0},
                                     {"patience": 0}])
def test_loop_options_are_validated(options):
    with pytest.raises(ValueError):
        LoopConfig(**options)


def test_peak_memory_sees_a_large_allocation():
    with PeakMemory() as peak:
        block = np.ones(40 * 2**20 // 8)  # 40 MiB, touched
        del block
    if peak.bytes_ is None:  # a kernel/sandbox without /proc/self/clear_refs: the product
        # reports the column as absent there, so there is nothing to check (never on CI here)
        pytest.skip("this kernel does not expose a resettable peak RSS")
    assert peak.bytes_ >= 35 * 2**20
