"""Backbones: real offline weights with sensible similarities, exact top split, FLOPs, and the
server's own RoBERTa pretraining."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backbones.flops import count_flops
from backbones.glove import GloveBackbone
from backbones.roberta_pretrain import RobertaPretrainConfig, pretrain_roberta
from backbones.transformer import TransformerBackbone, minilm_dir

SPORT = "the team won the football match"
SPORT2 = "soccer players scored goals"
BANK = "the central bank raised interest rates"


def _cos(vectors):
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return unit @ unit.T


@pytest.fixture(scope="module")
def minilm():
    return TransformerBackbone(minilm_dir())


@pytest.fixture(scope="module")
def tiny_roberta(tmp_path_factory):
    texts = [SPORT, SPORT2, BANK, "rain and storms hit the coast", "new songs from the band"] * 40
    losses = []
    config = RobertaPretrainConfig(hidden_size=32, num_layers=1, num_heads=2,
                                   intermediate_size=64, vocab_size=300, steps=20, max_length=16)
    path = pretrain_roberta(texts, tmp_path_factory.mktemp("rb"), config,
                            progress=lambda step, loss: losses.append(loss))
    again = pretrain_roberta(texts, tmp_path_factory.mktemp("rb2"), config)
    return path, again, losses


@pytest.mark.parametrize("make", [GloveBackbone, lambda: TransformerBackbone(minilm_dir())],
                         ids=["glove", "minilm"])
def test_related_texts_are_closer(make):
    sim = _cos(make().encode([SPORT, SPORT2, BANK]))
    assert sim[0, 1] > sim[0, 2] + 0.1


def test_minilm_is_the_real_model(minilm):
    assert minilm.arch == "bert" and minilm.hidden_size == 384
    assert 22_000_000 < minilm.num_parameters() < 23_500_000


@pytest.mark.parametrize("which", ["minilm", "roberta"])
def test_top_split_reproduces_encode_and_trains_only_the_copy(which, minilm, tiny_roberta):
    backbone = minilm if which == "minilm" else TransformerBackbone(tiny_roberta[0])
    texts = [SPORT, SPORT2 + " " + BANK, "x"]
    split = backbone.split_top(texts)
    rows = torch.tensor([2, 0])
    pooled = split.top(*(t[rows] for t in split.below))
    np.testing.assert_allclose(pooled.detach().numpy(), backbone.encode([texts[2], texts[0]]),
                               atol=1e-5)
    before = {k: v.clone() for k, v in backbone.model.state_dict().items()}
    pooled.sum().backward()
    assert all(p.grad is not None for p in split.top.parameters())
    assert all(p.grad is None for p in backbone.model.parameters())
    assert all(torch.equal(before[k], v) for k, v in backbone.model.state_dict().items())
    # the layers below the top do matmuls; embedding lookups alone count as 0 FLOPs
    assert (split.below_flops > 0) == (backbone.model.config.num_hidden_layers > 1)


def test_flops_scale_with_batch(minilm):
    _, one = minilm.encode_with_flops([SPORT, BANK])
    _, two = minilm.encode_with_flops([SPORT, BANK, SPORT, BANK])
    assert one.sum() > 0
    assert two.sum() == pytest.approx(2 * one.sum(), rel=0.05)


def test_count_flops_of_a_matmul():
    a, b = torch.ones(3, 5), torch.ones(5, 7)
    _, flops = count_flops(torch.matmul, a, b)
    assert flops == 2 * 3 * 5 * 7


def test_roberta_pretraining_is_deterministic_and_learns(tiny_roberta):
    path, again, losses = tiny_roberta
    first, second = TransformerBackbone(path), TransformerBackbone(again)
    assert first.arch == "roberta" and first.sha256 == second.sha256
    assert losses[0] > losses[-1]
    ids = first.tokenizer(SPORT)["input_ids"]
    assert first.tokenizer.decode(ids, skip_special_tokens=True) == SPORT


def test_missing_model_dir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a Hugging Face model folder"):
        TransformerBackbone(tmp_path / "nope")


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
