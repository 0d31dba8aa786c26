"""Shared tiny fixtures: a small synthetic world, a tiny BERT, and two released versions."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]


def run_config_defaults() -> dict:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        return tomllib.load(handle)["tool"]["flwr"]["app"]["config"]


def tiny_run_config(work_dir: Path, out_dir: Path, **overrides) -> dict:
    """The app's defaults shrunk for tests (3 users, small world, short training)."""
    config = run_config_defaults()
    config.update({
        "work-dir": str(work_dir), "out-dir": str(out_dir), "users": 3,
        "synthetic-articles": 240, "synthetic-public-users": 80, "synthetic-impressions": 14,
        "head-dim": 16, "global-epochs": 2, "roberta-steps": 10, "roberta-hidden": 32,
        "roberta-layers": 1, "max-length": 32,
    })
    config.update(overrides)
    return config


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer BERT with the real MiniLM tokenizer (saved locally)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from backbones.transformer import minilm_dir

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir(), local_files_only=True)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    path = tmp_path_factory.mktemp("tiny-bert")
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_settings(tmp_path_factory, tiny_bert_dir):
    from server.settings import Settings

    work = tmp_path_factory.mktemp("work")
    config = tiny_run_config(work, work / "results",
                             schedule=f"glove tinybert={tiny_bert_dir}")
    return Settings.from_run_config(config)


@pytest.fixture(scope="session")
def world(tiny_settings) -> Path:
    from simulations.data import prepare_dataset, synthetic_config

    s = tiny_settings
    return prepare_dataset(
        s.work_dir, s.data_source, s.users,
        synthetic_config(s.users, s.seed, s.synthetic_articles, s.synthetic_public_users,
                         s.synthetic_impressions),
    )


@pytest.fixture(scope="session")
def releases(tiny_settings, world):
    """(releases folder, [manifest of glove@1, manifest of tinybert@2])."""
    from server.releases import build_or_load_release

    folder = tiny_settings.work_dir / "releases"
    manifests = [build_or_load_release(entry, tiny_settings, world, folder)
                 for entry in tiny_settings.schedule]
    return folder, manifests


@pytest.fixture(scope="session")
def models(releases):
    from tasks.release import open_release

    folder, manifests = releases
    return [open_release(folder, m.release_id) for m in manifests]


@pytest.fixture(scope="session")
def user_data(world):
    from tasks.news import load_user, private_users, split_chronological
    from tasks.news_model import build_user_data

    user = private_users(world)[0]
    news, impressions = load_user(world, user)
    finetune, test = split_chronological(impressions, 0.7)
    return build_user_data(user, news, finetune, test)
