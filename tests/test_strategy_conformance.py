"""One suite every registered strategy passes on every registered task (like peft's common
tester or scikit-learn's ``check_estimator``): a new strategy or task is tested the moment it
registers.

Each (task, strategy) case runs one chain once — first personalization on GloVe, a swap to a
tiny BERT, a second swap to the server's tiny RoBERTa — and the checks below read it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import pytest
from flwr.app import ArrayRecord, MetricRecord, RecordDict

from client.guard import UplinkViolation, check_reply
from client.store import PrivateStore
from strategies.base import CostReport, LocalStrategy, TrackState
from strategies.first_personalization import create_first_personalization
from strategies.registry import create, names
from strategies.tuning import ENCODER, EncoderTuning
from tasks.registry import task_names

STRATEGIES = names()
CASES = [(task, name) for task in task_names() for name in STRATEGIES]
CASE_IDS = [f"{task}-{name}" for task, name in CASES]


@dataclass
class Chain:
    """One strategy's life on one user: states[i] / inputs[i] on models[i]."""

    strategy: LocalStrategy
    models: list
    data: object
    states: list[TrackState] = field(default_factory=list)
    costs: list[CostReport] = field(default_factory=list)  # per swap (versions 2, 3)
    fit_inputs: list[TrackState] = field(default_factory=list)  # what fit received
    inputs_after_fit: list[TrackState] = field(default_factory=list)


def run_chain(name, models, data, seed=0, swaps=None) -> Chain:
    strategy = create(name)
    base, _ = create_first_personalization("anchored-labels").personalize(models[0], data)
    state, _ = strategy.init_state(base, models[0], data, np.random.default_rng(seed))
    state.meta["seed"] = seed
    chain = Chain(strategy, models, data, [state])
    for old, new in list(zip(models[:-1], models[1:], strict=True))[:swaps]:
        snapshot = strategy.before_swap(chain.states[-1], old, data)
        chain.fit_inputs.append(copy.deepcopy(snapshot))
        state, cost = strategy.fit(snapshot, new, data, np.random.default_rng(seed))
        chain.inputs_after_fit.append(snapshot)
        chain.states.append(state)
        chain.costs.append(cost)
    return chain


@pytest.fixture(scope="session")
def chains(task_world):
    built: dict[tuple[str, str], Chain] = {}

    def get(task: str, name: str) -> Chain:
        if (task, name) not in built:
            world = task_world(task)
            built[task, name] = run_chain(name, world.models, world.data)
        return built[task, name]

    return get


@pytest.fixture
def chain(request, chains) -> Chain:
    return chains(*request.param)


def _parametrize(test):
    return pytest.mark.parametrize("chain", CASES, indirect=True, ids=CASE_IDS)(test)


def _trains_by_gradient(strategy: LocalStrategy) -> bool:
    return isinstance(strategy, EncoderTuning)


def test_builtin_strategies_registered():
    required = ("global", "keep-theta", "full", "top", "adapter", "lora", "fala")
    assert set(required) <= set(STRATEGIES)
    assert [n for n in STRATEGIES if not create(n).does_local_work] == [
        n for n in STRATEGIES if n in ("global", "keep-theta", "hard-prompt")]


def test_task_worlds_have_three_versions_of_growing_depth(task_world):
    archs = [m.backbone.arch for m in task_world("news").models]
    assert archs == ["glove", "bert", "roberta"]


@_parametrize
def test_two_chained_swaps_predict_shapes_and_task_metrics(chain):
    assert len(chain.states) == len(chain.models) == 3
    for state, model in zip(chain.states, chain.models, strict=True):
        task, n_outputs = model.task, model.head.n_outputs
        for batch in (chain.data.test, chain.data.finetune):
            logits = chain.strategy.predict(state, model, chain.data, batch)
            assert logits.shape == (len(batch), n_outputs)
            assert np.isfinite(logits).all()
        metrics = task.evaluate(chain.data.test, chain.strategy.predict(
            state, model, chain.data, chain.data.test))
        assert set(metrics) == set(task.metric_spec.names)
        assert np.isfinite(metrics[task.metric_spec.primary])


@_parametrize
def test_state_round_trips_through_store_bit_exactly(chain, tmp_path):
    store = PrivateStore(tmp_path)
    for i, (state, model) in enumerate(zip(chain.states, chain.models, strict=True)):
        store.save(f"tracks/{i}", state.arrays, state.meta)
        arrays, meta = store.load(f"tracks/{i}")
        assert meta == state.meta
        assert arrays.keys() == state.arrays.keys()
        for key, value in state.arrays.items():
            assert arrays[key].dtype == value.dtype and arrays[key].shape == value.shape
            assert arrays[key].tobytes() == value.tobytes()
        again = chain.strategy.predict(TrackState(arrays, meta), model, chain.data,
                                       chain.data.test)
        before = chain.strategy.predict(state, model, chain.data, chain.data.test)
        np.testing.assert_array_equal(again, before)


@_parametrize
def test_fit_does_not_mutate_its_input_and_is_deterministic(chain, request):
    for given, after in zip(chain.fit_inputs, chain.inputs_after_fit, strict=True):
        assert given.meta == after.meta and given.arrays.keys() == after.arrays.keys()
        for key in given.arrays:
            np.testing.assert_array_equal(given.arrays[key], after.arrays[key])
    again = run_chain(chain.strategy.name, chain.models, chain.data, swaps=1)
    first, second = chain.states[1], again.states[1]
    assert first.arrays.keys() == second.arrays.keys()
    for key in first.arrays:
        np.testing.assert_array_equal(first.arrays[key], second.arrays[key], err_msg=key)


@_parametrize
def test_costs_are_present_and_plausible(chain):
    strategy = chain.strategy
    for cost, model in zip(chain.costs, chain.models[1:], strict=True):
        metrics = cost.to_metrics()
        assert all(np.isfinite(v) and v >= 0 for v in metrics.values())
        assert set(cost.extra) <= set(strategy.extra_metrics)
        if not strategy.does_local_work:  # installs the release, nothing trained or solved
            assert cost.backward_flops == 0 and cost.solver_flops == 0
            assert cost.trainable_params == 0
            continue
        assert cost.fit_seconds > 0 and cost.forward_flops > 0
        assert 0 < cost.examples_used <= len(chain.data.finetune)
        assert cost.backbone_forwards > 0
        if _trains_by_gradient(strategy):
            assert cost.backward_flops > 0 and cost.trainable_params > 0
            assert cost.extra["head-only"] == float(model.backbone.arch == "glove")
            assert 1 <= cost.extra["best-epoch"] <= cost.extra["epochs-run"]
        else:  # closed form (FaLA): a solve, no backward pass
            assert cost.backward_flops == 0 and cost.solver_flops > 0
        if cost.trainable_params > model.backbone.num_parameters():  # every weight trains
            assert cost.backward_flops > cost.forward_flops  # weight + activation gradients


@_parametrize
def test_state_keeps_only_what_was_trained(chain):
    """A track never stores more of the encoder than its fit trained, and only a fit that
    trained every backbone weight (``full``) stores a whole backbone."""
    for state, model, cost in zip(chain.states[1:], chain.models[1:], chain.costs,
                                  strict=True):
        encoder = sum(v.size for k, v in state.arrays.items() if k.startswith(ENCODER))
        backbone = model.backbone.num_parameters()
        assert encoder <= cost.trainable_params
        if cost.trainable_params > backbone:
            assert encoder == backbone
        else:
            assert encoder < backbone / 4
        assert state.theta.shape == (model.dim,)


def test_full_fine_tuning_trains_every_backbone_weight(task_world):
    """What the generic checks above rely on for ``full`` (trainable > backbone)."""
    world = task_world("aggression")
    _, cost = create("full").fit(TrackState({"theta": np.ones(world.models[1].dim,
                                                                np.float32)}),
                                 world.models[1], world.data, np.random.default_rng(0))
    assert cost.trainable_params > world.models[1].backbone.num_parameters()


@_parametrize
def test_state_cannot_be_sent_upstream(chain):
    name = chain.strategy.name
    for state, cost in zip(chain.states[1:], chain.costs, strict=True):
        # The metrics a device reports pass the guard ...
        record = MetricRecord({f"{name}/{k}": float(v) for k, v in cost.to_metrics().items()})
        assert check_reply(RecordDict({"m": record})) > 0
        # ... and the private state does not.
        arrays = [v for v in state.arrays.values() if v.size]
        with pytest.raises(UplinkViolation):
            check_reply(RecordDict({"state": ArrayRecord(numpy_ndarrays=arrays)}))


@pytest.mark.parametrize("task", task_names())
def test_theta_one_reproduces_the_released_global_model(task, task_world):
    """For every task and version: the design with θ = 1 gives the head's own global logits
    (computed by a different path), on the user's test and fine-tune examples."""
    import torch

    world = task_world(task)
    for model in world.models:
        for batch in (world.data.test, world.data.finetune):
            features = torch.from_numpy(model.features(world.data, batch.documents()).vectors)
            with torch.no_grad():
                direct = model.head.global_logits(features, batch).numpy()
            via_design = model.design(world.data, batch).logits(np.ones(model.dim, np.float32))
            assert direct.shape == via_design.shape == (len(batch), model.head.n_outputs)
            np.testing.assert_allclose(via_design, direct, rtol=1e-5, atol=1e-5)
            personal = model.design(world.data, batch).logits(np.full(model.dim, 0.5,
                                                                       np.float32))
            assert not np.allclose(personal, direct)  # θ really enters the logits


@pytest.mark.parametrize("task", task_names())
def test_untrained_peft_structures_reproduce_the_global_model(task, task_world):
    """LoRA (B = 0) and adapters (up = 0) are the identity before training: a tuning
    strategy's scorer at θ = 1 gives the released model's logits on every layered version."""
    import torch

    world = task_world(task)
    for model in world.models[1:]:
        direct = model.design(world.data, world.data.test).logits(np.ones(model.dim,
                                                                           np.float32))
        for name in ("lora", "adapter", "full", "top"):
            strategy = create(name)
            scorer = strategy.scorer(model, world.data, world.data.test.documents(),
                                     np.ones(model.dim, np.float32), training=True)
            with torch.no_grad():
                logits = scorer.eval()(world.data.test).numpy()
            np.testing.assert_allclose(logits, direct, rtol=1e-4, atol=1e-4, err_msg=name)


GRADIENT = [name for name in STRATEGIES if _trains_by_gradient(create(name))]


@pytest.mark.parametrize("name", GRADIENT)
def test_without_layers_gradient_strategies_tune_head_and_theta_only(name, task_world):
    """GloVe has no layers: every gradient strategy fitted on it trains the head and θ only,
    stores no encoder tensor, and its row says so (``head-only`` = 1)."""
    world = task_world("aggression")
    glove = world.models[0]
    assert glove.backbone.arch == "glove"
    state = TrackState({"theta": np.ones(glove.dim, np.float32)})
    fitted, cost = create(name).fit(state, glove, world.data, np.random.default_rng(0))
    head = sum(p.numel() for p in glove.head.parameters())
    assert cost.extra["head-only"] == 1.0
    assert cost.trainable_params == head + glove.dim
    assert not [k for k in fitted.arrays if k.startswith(ENCODER)]
    logits = create(name).predict(fitted, glove, world.data, world.data.test)
    assert logits.shape == (len(world.data.test), glove.head.n_outputs)


def test_keep_theta_carries_the_first_personalization_across_both_swaps(chains):
    chain = chains("news", "keep-theta")
    personalized = chain.states[0].theta
    assert not np.allclose(personalized, 1.0)  # there was something to keep
    for state, model in zip(chain.states[1:], chain.models[1:], strict=True):
        np.testing.assert_array_equal(state.theta, personalized)
        np.testing.assert_allclose(
            chain.strategy.predict(state, model, chain.data, chain.data.test),
            model.design(chain.data, chain.data.test).logits(personalized), rtol=1e-6)
