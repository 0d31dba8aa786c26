"""The first personalization chooses its λ on the fine-tune split's chronological tail only."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from strategies.fala.ridge import PersonalMatrix
from strategies.first_personalization import create_first_personalization
from tasks.base import chronological_tail

TASKS = ("news", "aggression", "lamp-3")


def _tail_losses(model, data, grid):
    """The validation loss of every λ, computed here from the definitions."""
    batch = data.finetune
    design = model.design(data, batch)
    rows, offset = np.asarray(design.rows), np.asarray(design.offset)
    targets = model.task.label_targets(batch.labels, rows.shape[1])
    head, tail = chronological_tail(batch, 0.2)
    losses = {}
    for lam in grid:
        solver = PersonalMatrix(lam=lam, objective="ce-labels").fit(
            rows[head].reshape(-1, rows.shape[-1]), y=targets[head].reshape(-1),
            offset=offset[head].reshape(-1))
        logits = rows[tail] @ solver.coef_ + offset[tail]
        losses[lam] = float(model.task.loss(torch.as_tensor(logits),
                                            torch.as_tensor(np.asarray(batch.labels)[tail])))
    return losses


@pytest.mark.parametrize("task", TASKS)
def test_lambda_is_the_lowest_validation_loss_of_the_grid(task_world, task):
    world = task_world(task)
    model = world.models[0]
    grid = (1.0, 0.1, 0.01, 0.001, 0.0001)
    state, cost = create_first_personalization("anchored-labels").personalize(model, world.data)
    losses = _tail_losses(model, world.data, grid)
    assert cost.extra["lambda"] == min(grid, key=lambda lam: (losses[lam], -lam))
    # θ is then refitted on the whole fine-tune split with that λ
    fixed, _ = create_first_personalization(
        "anchored-labels", f"lam={cost.extra['lambda']}").personalize(model, world.data)
    np.testing.assert_array_equal(state.arrays["theta"], fixed.arrays["theta"])


def test_the_test_split_is_never_read(task_world):
    world = task_world("aggression")
    model = world.models[0]
    test = world.data.test
    flipped = dataclasses.replace(world.data, test=test.subset(np.arange(len(test))))
    flipped.test.labels = 1 - np.asarray(test.labels)
    method = create_first_personalization("anchored-labels")
    state, cost = method.personalize(model, world.data)
    again, cost_again = method.personalize(model, flipped)
    np.testing.assert_array_equal(state.arrays["theta"], again.arrays["theta"])
    assert cost.extra["lambda"] == cost_again.extra["lambda"]


def test_an_explicit_lambda_is_fixed_and_bad_options_fail():
    fixed = create_first_personalization("anchored-labels", "lam=0.01")
    assert fixed.config.lam == 0.01 and fixed.config.lam_values() is None
    grid = create_first_personalization("anchored-labels", {"lam-grid": "0.1 1"})
    assert grid.config.lam_values() == [0.1, 1.0]
    for bad in ("lam-grid=0 1", "lam-grid=x", "validation-fraction=1", "lam=-1"):
        with pytest.raises(ValueError):
            create_first_personalization("anchored-labels", bad)
