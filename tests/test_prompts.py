"""PerPLM soft prompts: prefixes at every layer trained through an MLP and stored without it,
a frozen backbone, an exact store round trip, and a masked-LM stage that learns, reads only
the fine-tune texts, and is charged.

Run on the shared tiny worlds' BERT and RoBERTa (the server's RoBERTa fills its position table
with its token budget, so a prompt that shifted the text's positions would index past it)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import strategies.perplm_mlm  # noqa: F401  (registers perplm-mlm)
import strategies.soft_prompt  # noqa: F401  (registers soft-prompt)
from client.store import PrivateStore
from strategies.base import CostReport, TrackState
from strategies.first_personalization import create_first_personalization
from strategies.perplm_mlm import (
    PerplmMlmOptions,
    choose_masked,
    masked_lm_loss,
    train_masked_lm,
)
from strategies.registry import create
from strategies.soft_prompt import SoftPromptOptions, attach_prefix

PROMPTS = ["soft-prompt", "perplm-mlm"]
VERSIONS = {"bert": 1, "roberta": 2}  # task_world's models: GloVe, tiny BERT, tiny RoBERTa
VIRTUAL_TOKENS = 4


FAST_EXTRA = {"perplm-mlm": {"mlm-epochs": "1"}}  # options only that strategy has


def _fast(name: str, **options: str) -> dict[str, str]:
    """Small, quick options for ``name`` (one task epoch, one MLM epoch)."""
    fast = {"epochs": "1", "virtual-tokens": str(VIRTUAL_TOKENS), "prefix-hidden": "16"}
    return {**fast, **FAST_EXTRA.get(name, {}), **options}


def _recording(name: str):
    """The strategy as a subclass that keeps its training scorer and a copy of the scorer's
    frozen weights taken before any training, for inspection after ``fit``."""
    strategy = create(name, _fast(name))

    class Recording(type(strategy)):
        def before_training(self, scorer, model, data, rng, cost):
            self.scorer_ = scorer
            self.frozen_before_ = {k: v.clone() for k, v in _frozen(scorer.encoder).items()}
            super().before_training(scorer, model, data, rng, cost)

    return Recording(strategy.config)


def _frozen(encoder) -> dict[str, torch.Tensor]:
    return {k: p.detach() for k, p in encoder.named_parameters() if "prompt_encoder" not in k}


def _swap(strategy, world, version: int, seed: int = 0):
    """First personalization on GloVe, then a swap to ``world.models[version]``."""
    glove, new = world.models[0], world.models[version]
    base, _ = create_first_personalization("anchored-labels").personalize(glove, world.data)
    state, _ = strategy.init_state(base, glove, world.data, np.random.default_rng(seed))
    state = strategy.before_swap(state, glove, world.data)
    return strategy.fit(state, new, world.data, np.random.default_rng(seed))


@pytest.fixture(scope="module")
def fitted(task_world):
    """``fitted(task, arch, name)`` -> (recording strategy, state, cost, released weights
    before the fit), each case fitted once for the whole module."""
    done: dict[tuple[str, str, str], tuple] = {}

    def get(task: str, arch: str, name: str):
        if (task, arch, name) not in done:
            world = task_world(task)
            model = world.models[VERSIONS[arch]]
            assert model.backbone.arch == arch
            released = {k: v.clone() for k, v in model.backbone.model.state_dict().items()}
            strategy = _recording(name)
            state, cost = _swap(strategy, world, VERSIONS[arch])
            done[task, arch, name] = strategy, state, cost, released
        return done[task, arch, name]

    return get


CASES = [("news", "bert", "soft-prompt"), ("news", "roberta", "soft-prompt"),
         ("aggression", "bert", "soft-prompt"), ("aggression", "roberta", "soft-prompt"),
         ("news", "bert", "perplm-mlm"), ("aggression", "bert", "perplm-mlm"),
         ("aggression", "roberta", "perplm-mlm")]


@pytest.mark.parametrize("case", CASES, ids="-".join)
def test_only_the_prompt_trains_and_the_backbone_gets_no_gradient(case, fitted, task_world):
    strategy, _, cost, released = fitted(*case)
    model = task_world(case[0]).models[VERSIONS[case[1]]]
    for key, value in model.backbone.model.state_dict().items():  # the release itself
        assert torch.equal(value, released[key]), key
    encoder = strategy.scorer_.encoder  # the device's private copy that was trained
    for key, param in _frozen(encoder).items():
        assert not param.requires_grad and param.grad is None, key
        assert torch.equal(param, strategy.frozen_before_[key]), key
    prompt = {k: p for k, p in encoder.named_parameters() if "prompt_encoder" in k}
    assert any(k.endswith("transform.2.weight") for k in prompt)  # trained through the MLP
    assert all(p.requires_grad and p.grad is not None for p in prompt.values())
    assert cost.extra["head-only"] == 0.0


@pytest.mark.parametrize("case", CASES, ids="-".join)
def test_state_holds_the_prefixes_not_the_mlp_and_round_trips_the_store(case, fitted,
                                                                        task_world, tmp_path):
    strategy, state, _, _ = fitted(*case)
    world = task_world(case[0])
    model = world.models[VERSIONS[case[1]]]
    layers, hidden = model.backbone.model.config.num_hidden_layers, model.backbone.hidden_size
    assert {k for k in state.arrays if not k.startswith("head.")} == {"theta", "encoder.prefix"}
    assert state.arrays["encoder.prefix"].shape == (VIRTUAL_TOKENS, 2 * layers * hidden)
    assert np.abs(state.arrays["encoder.prefix"]).max() > 0  # moved away from the zero start

    store = PrivateStore(tmp_path)
    store.save("tracks/prompt", state.arrays, state.meta)
    loaded = TrackState(*store.load("tracks/prompt"))
    batch = world.data.finetune  # the texts the training scorer was built over
    with torch.no_grad():
        trained = strategy.scorer_.eval()(batch).numpy()
    rebuilt = strategy.predict(loaded, model, world.data, batch)
    np.testing.assert_allclose(rebuilt, trained, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", VERSIONS)
def test_masked_lm_stage_is_charged_on_top_of_soft_prompt(arch, fitted, task_world):
    soft, mlm = (fitted("aggression", arch, name)[2] for name in PROMPTS)
    n_texts = len(task_world("aggression").data.finetune.documents())
    assert mlm.backbone_forwards - soft.backbone_forwards == n_texts  # one MLM epoch
    assert mlm.forward_flops > soft.forward_flops
    assert mlm.backward_flops > soft.backward_flops
    assert np.isfinite(mlm.to_metrics()["mlm-loss"])
    assert "mlm-loss" not in soft.extra


def test_masked_lm_stage_reads_the_fine_tune_texts_only(fitted, task_world):
    data = task_world("aggression").data
    scorer = fitted("aggression", "bert", "perplm-mlm")[0].scorer_
    readable = np.flatnonzero(scorer.position.numpy() >= 0)  # the texts the encoder holds
    np.testing.assert_array_equal(readable, data.finetune.documents())
    assert scorer.encoder.n_texts == len(readable)
    assert not set(data.test.documents()) <= set(readable)  # test texts exist, unseen


@pytest.mark.parametrize("arch", VERSIONS)
def test_masked_lm_stage_lowers_the_loss_on_the_writers_texts(arch, task_world):
    world = task_world("aggression")
    model, data = world.models[VERSIONS[arch]], world.data
    # tiny random backbones have tiny word embeddings, so the tied decoder's scores move
    # little: a large step makes the effect clear within a few steps
    strategy = create("perplm-mlm", _fast("perplm-mlm", **{
        "mlm-epochs": "4", "batch-size": "8", "lr": "0.1"}))
    torch.manual_seed(0)
    scorer = strategy.scorer(model, data, data.finetune.documents(),
                             np.ones(model.dim, np.float32), training=True)
    encoder = scorer.encoder
    rows = torch.arange(encoder.n_texts)
    fixed = choose_masked(encoder.input_ids, encoder.attention_mask, encoder.special_ids, 0.15,
                          np.random.default_rng(1))

    def measured() -> float:
        encoder.eval()
        with torch.no_grad():
            return float(masked_lm_loss(encoder, rows, fixed))

    frozen = {k: v.clone() for k, v in _frozen(encoder).items()}
    head = {k: v.clone() for k, v in scorer.head.state_dict().items()}
    before = measured()
    cost = CostReport()
    result = train_masked_lm(scorer, strategy.config.mlm_loop(), 0.15,
                             np.random.default_rng(0), cost)
    after = measured()
    assert after < before - 0.02, (before, after)
    assert result.epochs_run == 4 and cost.backward_flops > 0
    assert cost.backbone_forwards == 4 * encoder.n_texts
    for key, value in _frozen(encoder).items():
        assert torch.equal(value, frozen[key]), key
    for key, value in scorer.head.state_dict().items():  # no gradient reaches the head
        assert torch.equal(value, head[key]), key


@pytest.mark.parametrize("arch", VERSIONS)
def test_under_a_prompt_the_text_keeps_its_positions_and_its_padding_is_ignored(arch,
                                                                               task_world):
    """peft passes prefixes as a key/value cache, after which BERT and RoBERTa would number
    the text's tokens from the prefix length on: for the server's RoBERTa, whose token budget
    fills its position table, a full-length text would index past it."""
    backbone = task_world("aggression").models[VERSIONS[arch]].backbone
    texts = [" ".join(["word"] * 4 * backbone.max_length), "short text"]  # the first is cut
    seen: list[torch.Tensor] = []

    def record(module, args):
        seen.append(args[0].clone())

    plain = backbone.tunable(texts)
    plain.model.embeddings.position_embeddings.register_forward_pre_hook(record)
    plain(torch.arange(2))
    prompted = backbone.tunable(texts)
    attach_prefix(prompted, 8, 16, init="random")
    base = prompted.model.get_base_model()
    base.embeddings.position_embeddings.register_forward_pre_hook(record)
    with torch.no_grad():
        both = prompted.eval()(torch.arange(2))
        alone = prompted(torch.tensor([1]))  # no padding around it
    assert int(plain.attention_mask[0].sum()) == backbone.max_length
    torch.testing.assert_close(seen[1], seen[0], rtol=0, atol=0)
    torch.testing.assert_close(both[1:], alone, rtol=1e-5, atol=1e-6)


def test_masking_takes_real_tokens_only_and_at_least_one_per_text(task_world):
    encoder = task_world("aggression").models[VERSIONS["bert"]].backbone.tunable(
        ["a", "the central bank raised interest rates again today", ""])
    chosen = choose_masked(encoder.input_ids, encoder.attention_mask, encoder.special_ids,
                           0.15, np.random.default_rng(0))
    special = torch.isin(encoder.input_ids, torch.tensor(encoder.special_ids))
    real = ~special & (encoder.attention_mask == 1)
    assert not (chosen & ~real).any()
    assert int(chosen[0].sum()) == 1 and int(chosen[1].sum()) >= 1
    assert int(chosen[2].sum()) == 0  # nothing but special tokens: nothing to predict
    many = choose_masked(encoder.input_ids[1:2].repeat(500, 1),
                         encoder.attention_mask[1:2].repeat(500, 1), encoder.special_ids, 0.15,
                         np.random.default_rng(0))
    n = int(real[1].sum())  # each of n tokens with 0.15, plus one when none was drawn
    expected = 0.15 + (1 - 0.15) ** n / n
    assert abs(float(many[:, real[1]].float().mean()) - expected) < 0.01, (n, expected)


@pytest.mark.parametrize("name", PROMPTS)
def test_on_glove_prompts_reduce_to_head_tuning(name, task_world):
    world = task_world("aggression")
    glove = world.models[0]
    strategy = create(name, _fast(name))
    base, _ = create_first_personalization("anchored-labels").personalize(glove, world.data)
    state, cost = strategy.fit(base, glove, world.data, np.random.default_rng(0))
    assert cost.extra["head-only"] == 1.0 and "mlm-loss" not in cost.extra
    assert not [k for k in state.arrays if k.startswith("encoder.")]
    logits = strategy.predict(state, glove, world.data, world.data.test)
    assert logits.shape == (len(world.data.test), glove.head.n_outputs)


def test_a_prefix_of_another_shape_is_refused(fitted, task_world):
    data = task_world("aggression").data
    state = fitted("aggression", "bert", "soft-prompt")[1]
    model = task_world("aggression").models[VERSIONS["bert"]]
    wrong = create("soft-prompt", _fast("soft-prompt", **{"virtual-tokens": "5"}))
    with pytest.raises(ValueError, match="shape"):
        wrong.predict(state, model, data, data.test)


def test_options_are_validated_with_their_names():
    assert create("perplm-mlm", {"virtual-tokens": "3", "mask-probability": "0.2"}).config == \
        PerplmMlmOptions(virtual_tokens=3, mask_probability=0.2)
    for bad, word in [({"virtual_tokens": 0}, "virtual_tokens"),
                      ({"prefix_hidden": 0}, "prefix_hidden"),
                      ({"prefix_init": "ones"}, "prefix_init"),
                      ({"epochs": 0}, "epochs")]:
        with pytest.raises(ValueError, match=word):
            SoftPromptOptions(**bad)
    for bad, word in [({"mlm_epochs": 0}, "mlm_epochs"),
                      ({"mask_probability": 1.0}, "mask_probability")]:
        with pytest.raises(ValueError, match=word):
            PerplmMlmOptions(**bad)
    with pytest.raises(ValueError, match="mlm-epochs"):
        create("soft-prompt", {"mlm-epochs": "2"})  # the stage belongs to perplm-mlm only
