"""Backbones: real offline weights with sensible similarities, exact top split, FLOPs, and the
server's own RoBERTa pretraining."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from backbones.flops import cholesky_flops, count_flops, triangular_solve_flops
from backbones.glove import GloveBackbone
from backbones.roberta_pretrain import RobertaPretrainConfig, pretrain_roberta
from backbones.transformer import TransformerBackbone, minilm_dir

SPORT = "the team won the football match"
SPORT2 = "soccer players scored goals"
BANK = "the central bank raised interest rates"
TINY_ROBERTA = dict(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                    vocab_size=300, steps=20, batch_size=16, max_length=16)


def _cos(vectors):
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return unit @ unit.T


@pytest.fixture(scope="module")
def minilm():
    return TransformerBackbone(minilm_dir())


@pytest.fixture(scope="module")
def tiny_roberta(tmp_path_factory):
    """Two pretraining runs of the same config: (dir, dir of the rerun, progress losses)."""
    texts = [SPORT, SPORT2, BANK, "rain and storms hit the coast", "new songs from the band"] * 40
    losses = []
    config = RobertaPretrainConfig(**TINY_ROBERTA)
    path = pretrain_roberta(texts, tmp_path_factory.mktemp("rb"), config,
                            progress=lambda step, loss: losses.append(loss))
    again = pretrain_roberta(texts, tmp_path_factory.mktemp("rb2"), config)
    return path, again, losses


@pytest.mark.parametrize("make", [GloveBackbone, lambda: TransformerBackbone(minilm_dir())],
                         ids=["glove", "minilm"])
def test_related_texts_are_closer(make):
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # set by conftest before transformers loads
    sim = _cos(make().encode([SPORT, SPORT2, BANK]))
    assert sim[0, 1] > sim[0, 2] + 0.1


def test_minilm_is_the_real_model(minilm):
    assert minilm.arch == "bert" and minilm.hidden_size == 384
    assert 22_000_000 < minilm.num_parameters() < 23_500_000
    assert minilm.top_parameters() == 1_774_464  # one 384-d layer with a 1536-d feed-forward


def test_encode_is_deterministic_and_independent_of_batch_mates(minilm):
    vectors, flops = minilm.encode_with_flops([SPORT, BANK, SPORT2])
    assert vectors.dtype == np.float32 and vectors.shape == (3, 384)
    assert flops.dtype == np.int64 and flops.shape == (3,)
    np.testing.assert_array_equal(minilm.encode([BANK]), vectors[1:2])


@pytest.mark.parametrize("which", ["minilm", "roberta"])
def test_top_split_reproduces_encode_and_trains_only_the_copy(which, minilm, tiny_roberta):
    backbone = minilm if which == "minilm" else TransformerBackbone(tiny_roberta[0])
    texts = [SPORT, SPORT2 + " " + BANK, "x"]
    split = backbone.split_top(texts)
    hidden, mask = split.below, split.below_mask
    assert hidden.shape == (3, int(mask.sum(1).max()), backbone.hidden_size)  # longest text
    assert split.setup_forwards == 3
    split.requires_grad_(True)
    pooled = split(torch.tensor([2, 0]))
    np.testing.assert_allclose(pooled.detach().numpy(), backbone.encode([texts[2], texts[0]]),
                               atol=1e-5)
    before = {k: v.clone() for k, v in backbone.model.state_dict().items()}
    pooled.sum().backward()
    assert sum(p.numel() for p in split.parameters()) == backbone.top_parameters()
    assert all(p.grad is not None for p in split.parameters())
    assert all(p.grad is None for p in backbone.model.parameters())
    assert all(torch.equal(before[k], v) for k, v in backbone.model.state_dict().items())
    # the forward stopped below the last layer: (L - 1) of L layers' FLOPs
    layers = backbone.model.config.num_hidden_layers
    full = backbone.encode_with_flops(texts)[1].sum()
    assert split.setup_flops == pytest.approx(full * (layers - 1) / layers, rel=0.01)


@pytest.mark.parametrize("which", ["minilm", "roberta"])
def test_tunable_encoder_reproduces_encode_from_a_private_frozen_copy(which, minilm,
                                                                      tiny_roberta):
    backbone = minilm if which == "minilm" else TransformerBackbone(tiny_roberta[0])
    texts = [SPORT, SPORT2 + " " + BANK, "x"]
    encoder = backbone.tunable(texts)
    assert encoder.has_layers and not encoder.trainable_parameters()
    assert (encoder.extra_tokens == 0).all() and encoder.setup_flops == 0
    np.testing.assert_allclose(encoder(torch.tensor([1, 2])).detach().numpy(),
                               backbone.encode(texts[1:]), atol=1e-5)
    assert encoder.model is not backbone.model  # strategies may change the copy freely
    encoder.requires_grad_(True)
    encoder(torch.tensor([0])).sum().backward()
    assert all(p.grad is None for p in backbone.model.parameters())
    assert len(encoder.adapter_sites()) == 2 * backbone.model.config.num_hidden_layers


def test_contexts_are_prepended_and_truncated_from_the_left(minilm):
    texts = [SPORT, BANK]
    context = "first older item . " * 20 + "most relevant item"
    plain = minilm.tunable(texts)
    budget = minilm.max_length + 6
    with_context = minilm.tunable(texts, [context, ""], max_length=budget)
    ids = with_context.input_ids[0][with_context.attention_mask[0] == 1].tolist()
    tokenizer = minilm.tokenizer
    assert len(ids) == budget
    assert with_context.extra_tokens[0] == budget - int(plain.attention_mask[0].sum())
    # a budget below the text's own never cuts the text: it is raised to it
    assert minilm.tunable(texts, [context, ""], max_length=4).attention_mask.sum(1)[0] == \
        minilm.max_length
    assert with_context.extra_tokens[1] == 0  # no context: the plain text
    decoded = tokenizer.decode(ids)
    assert decoded.endswith(tokenizer.decode(tokenizer(SPORT, add_special_tokens=False)
                                             ["input_ids"]) + " [SEP]")
    assert "most relevant item [SEP]" in decoded  # the context's end survives ...
    assert 0 < decoded.count("first older item") < 20  # ... its start was cut
    long_text = "goal " * 200  # a text longer than its own budget keeps its plain prefix
    cut = minilm.tunable([long_text], ["some context"], max_length=minilm.max_length + 10)
    assert cut.extra_tokens[0] > 0


def test_glove_has_no_layers_and_prepends_context_words():
    glove = GloveBackbone()
    encoder = glove.tunable(["goal scored"], ["football match"], max_length=3)
    assert not encoder.has_layers and not list(encoder.parameters())
    assert encoder.extra_tokens.tolist() == [1]  # room for one context word: "match"
    expected = glove.encode(["match goal scored"])
    np.testing.assert_allclose(encoder(torch.tensor([0])).numpy(), expected, atol=1e-6)
    assert encoder.setup_flops == 3 * glove.hidden_size


def test_flops_scale_with_batch(minilm):
    texts = ["goals", SPORT + " " + BANK]
    _, one = minilm.encode_with_flops(texts)
    _, two = minilm.encode_with_flops(texts + texts)
    assert (one > 0).all()
    assert two.sum() == pytest.approx(2 * one.sum(), rel=0.01)
    assert one[1] == pytest.approx(one[0] * 14 / 3, rel=0.01)  # split by tokens: 14 vs 3


def test_flops_measured_once_per_shape_hold_for_other_texts(minilm):
    minilm.encode_with_flops([SPORT, BANK])  # measures the (2, max_length) shape
    unpadded = [" ".join([SPORT] * 20)] * 2  # truncated: no padding, no attention mask needed
    _, reused = minilm.encode_with_flops(unpadded)
    with torch.inference_mode():
        _, fresh = count_flops(lambda: minilm.model(**minilm._tokens(unpadded)))
    assert abs(int(reused.sum()) - fresh) <= 2  # per-text rounding only


def test_count_flops_of_a_matmul():
    a, b = torch.ones(3, 5), torch.ones(5, 7)
    product, flops = count_flops(torch.matmul, a, b)
    assert flops == 2 * 3 * 5 * 7
    assert torch.equal(product, torch.full((3, 7), 5.0))


def test_analytic_solver_flops_match_counted_loops():
    n, k = 5, 3
    operations = 0  # naive Cholesky: one op per multiply, add, divide and square root
    for j in range(n):
        operations += 2 * j + 1  # l_jj = sqrt(a_jj - sum_k l_jk²)
        operations += (n - j - 1) * (2 * j + 1)  # l_ij = (a_ij - sum_k l_ik l_jk) / l_jj
    assert cholesky_flops(n) == operations
    # forward substitution per right-hand side: row i has i multiply-adds and one divide
    assert triangular_solve_flops(n, k) == k * sum(2 * i + 1 for i in range(n))


def test_roberta_pretraining_is_deterministic_and_learns(tiny_roberta):
    path, again, losses = tiny_roberta
    first, second = TransformerBackbone(path), TransformerBackbone(again)
    assert first.arch == "roberta" and first.hidden_size == 32
    assert first.sha256 == second.sha256
    assert len(losses) >= 10 and losses[-1] < losses[0]
    assert sorted(p.name for p in path.iterdir() if p.suffix == ".safetensors") == [
        "model.safetensors"]


def test_roberta_tokenizer_loads_offline_and_round_trips(tiny_roberta):
    tokenizer = AutoTokenizer.from_pretrained(tiny_roberta[0], local_files_only=True)
    ids = tokenizer(SPORT + ", 2024!")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == SPORT + ", 2024!"
    assert tokenizer.convert_tokens_to_ids("<mask>") == tokenizer.mask_token_id


def test_pretrain_config_is_validated():
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        RobertaPretrainConfig(hidden_size=30, num_heads=4)
    with pytest.raises(ValueError, match="mask_probability"):
        RobertaPretrainConfig(mask_probability=1.0)
    with pytest.raises(ValueError, match="vocab_size must be >= 261"):
        RobertaPretrainConfig(vocab_size=100)


def test_missing_or_broken_model_dir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope does not exist"):
        TransformerBackbone(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="not a Hugging Face model folder"):
        TransformerBackbone(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ValueError, match="could not load a tokenizer and model from"):
        TransformerBackbone(tmp_path)


def test_user_glove_text_file(tmp_path):
    from backbones.registry import load_backbone, loader_for_path

    path = tmp_path / "vectors.txt"
    path.write_text("goal 1 0 0\nmatch 0.8 0.2 0\nbank 0 0 1\n")
    assert loader_for_path(path) == "glove"
    backbone = load_backbone("glove", str(path))
    vectors = backbone.encode(["goal match", "bank", "unknown words only"])
    np.testing.assert_allclose(vectors[0], [0.9, 0.1, 0.0], atol=1e-6)
    assert not vectors[2].any()  # no known token -> zeros, not an error
    path.write_text("goal 1 0 0\nmatch 0.8 0.2\n")
    with pytest.raises(ValueError, match="vectors.txt:2: 2 values, expected 3"):
        load_backbone("glove", str(path))


def test_pooling_reads_the_text_not_the_context(minilm):
    """With a context the pooled vector is the text's own positions (conditioned on the
    context through attention), so it stays near the plain vector; an empty context gives
    exactly the plain encoding."""
    texts = [SPORT, BANK]
    context = "completely unrelated words about cooking pasta and tomato sauce " * 3
    pooled = minilm.tunable(texts, [context, ""], max_length=64)(torch.tensor([0, 1]))
    plain = minilm.encode(texts)
    np.testing.assert_allclose(pooled[1].detach().numpy(), plain[1], atol=1e-5)
    context_only = minilm.encode([context])[0]
    cos = lambda a, b: float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))  # noqa: E731
    vector = pooled[0].detach().numpy()
    assert cos(vector, plain[0]) > cos(vector, context_only)
    encoder = minilm.tunable(texts, [context, ""], max_length=64)
    own = int(minilm.tunable(texts).attention_mask[0].sum())
    assert int(encoder.pool_mask[0].sum()) == own  # [CLS] + text + [SEP]


def test_split_at_layer_k_tunes_the_top_k_layers(minilm):
    texts = [SPORT, BANK]
    split = minilm.split_top(texts, layers=2)
    np.testing.assert_allclose(split(torch.tensor([0, 1])).detach().numpy(),
                               minilm.encode(texts), atol=1e-5)
    assert sum(p.numel() for p in split.parameters()) == minilm.top_parameters(2)
    assert minilm.top_parameters(2) == 2 * minilm.top_parameters(1)
    full = minilm.encode_with_flops(texts)[1].sum()
    assert split.setup_flops == pytest.approx(full * 4 / 6, rel=0.01)  # 4 of MiniLM's 6
    for bad in (0, 7):
        with pytest.raises(ValueError, match="layers must be in 1..6"):
            minilm.split_top(texts, layers=bad)
