"""Shared tiny fixtures: small synthetic worlds (news, and one per registered task), a tiny
BERT, and released versions of each: GloVe and tiny BERT (``tiny_settings``), plus the
server's own tiny RoBERTa for every task world (``task_world``)."""

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
        "synthetic-documents": 240, "synthetic-public-users": 80, "synthetic-items": 14,
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
    from simulations.settings import Settings

    work = tmp_path_factory.mktemp("work")
    config = tiny_run_config(work, work / "results",
                             schedule=f"glove tinybert={tiny_bert_dir}")
    return Settings.from_run_config(config)


@pytest.fixture(scope="session")
def world(tiny_settings) -> Path:
    from simulations.data import prepare_dataset

    s = tiny_settings
    return prepare_dataset(s.work_dir, s.task, s.data_source, s.users, s.synthetic())


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
def user_data(world, tiny_settings):
    from tasks.registry import get_task

    task = get_task("news")
    return task.load_user(world, task.private_users(world)[0], tiny_settings.finetune_fraction)


# Tiny worlds of every task (small enough that a full swap of every strategy takes < 1 s).
TASK_SIZES = {
    "news": {},
    "default": {"synthetic-documents": 150, "synthetic-public-users": 40, "synthetic-items": 30},
}


class TaskWorld:
    """One task's tiny world: settings, prepared data, three opened releases (GloVe, tiny
    BERT, tiny RoBERTa), one user."""

    def __init__(self, settings, data_dir, models, data):
        self.settings, self.data_dir, self.models, self.data = settings, data_dir, models, data


@pytest.fixture(scope="session")
def task_world(tmp_path_factory, tiny_bert_dir):
    """``task_world(name)`` -> the (cached) ``TaskWorld`` of a registered task."""
    from server.releases import build_or_load_release
    from simulations.data import prepare_dataset
    from simulations.settings import Settings
    from tasks.registry import get_task
    from tasks.release import open_release

    built: dict[str, TaskWorld] = {}

    def make(name: str) -> TaskWorld:
        if name not in built:
            work = tmp_path_factory.mktemp(f"world-{name}")
            sizes = TASK_SIZES.get(name, TASK_SIZES["default"])
            settings = Settings.from_run_config(tiny_run_config(
                work, work / "results", task=name,
                schedule=f"glove tinybert={tiny_bert_dir} roberta", **sizes))
            data_dir = prepare_dataset(settings.work_dir, name, settings.data_source,
                                       settings.users, settings.synthetic())
            folder = work / "releases"
            models = [open_release(folder, build_or_load_release(e, settings, data_dir,
                                                                 folder).release_id)
                      for e in settings.schedule]
            task = get_task(name)
            data = task.load_user(data_dir, task.private_users(data_dir)[0],
                                  settings.finetune_fraction)
            built[name] = TaskWorld(settings, data_dir, models, data)
        return built[name]

    return make

