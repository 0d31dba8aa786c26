"""Run configuration: defaults, scenario files, overrides, and clear errors on bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulations.cli import app_defaults, resolve_run_config
from simulations.settings import Settings, parse_schedule
from strategies.registry import create_many, parse_options
from tests.conftest import run_config_defaults


def test_scenario_then_overrides_and_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = resolve_run_config("fala-ablations", ["users=3", "strategies=global fala"],
                                app_defaults())
    assert config["users"] == 3 and config["strategies"] == "global fala"
    assert config["schedule"] == "glove bert roberta"
    assert Path(config["work-dir"]) == tmp_path / ".swapfl"
    Settings.from_run_config(config)  # the merged config is valid


@pytest.mark.parametrize("overrides, message", [
    (["user=3"], "unknown run-config keys"),
    (["users"], "expected key=value"),
])
def test_bad_overrides(overrides, message):
    with pytest.raises(SystemExit, match=message):
        resolve_run_config(None, overrides, app_defaults())


def test_unknown_scenario_lists_the_known_ones():
    with pytest.raises(SystemExit, match="fala-ablations"):
        resolve_run_config("nope", [], app_defaults())


def test_schedule_entries():
    entries = parse_schedule("glove mybert=/tmp/x roberta")
    assert [e.version for e in entries] == ["glove@1", "mybert@2", "roberta@3"]
    assert entries[1].path == "/tmp/x"
    with pytest.raises(ValueError, match="schedule is empty"):
        parse_schedule("  ")
    with pytest.raises(ValueError, match="'name' or 'name=path'"):
        parse_schedule("bert=")


def test_settings_reject_bad_values():
    config = run_config_defaults()
    with pytest.raises(ValueError, match="task 'lamp' is not registered; known: .*news"):
        Settings.from_run_config({**config, "task": "lamp"})
    with pytest.raises(ValueError, match="'users': expected int"):
        Settings.from_run_config({**config, "users": "many"})
    with pytest.raises(KeyError, match="lacks 'seed'"):
        Settings.from_run_config({k: v for k, v in config.items() if k != "seed"})


def test_strategy_options_are_parsed_and_validated():
    assert parse_options("fala.lam=0.05 top.epochs=3") == {"fala": {"lam": "0.05"},
                                                          "top": {"epochs": "3"}}
    strategies = create_many("global fala", "fala.lam-grid= fala.lam=0.05")
    assert strategies["fala"].config.lam == 0.05 and strategies["fala"].config.lam_grid == ""
    with pytest.raises(ValueError, match="unknown strategy 'fal'"):
        create_many("global fal")
    with pytest.raises(ValueError, match="has no option 'lamda'"):
        create_many("fala", "fala.lamda=1")
    with pytest.raises(ValueError, match="not in the run"):
        create_many("global", "top.epochs=2")
    with pytest.raises(ValueError, match="edge_rule must be"):
        create_many("fala", "fala.edge-rule=xor")
    with pytest.raises(ValueError, match="needs objective 'mse'"):
        create_many("fala", "fala.objective=ce-labels")
    with pytest.raises(ValueError, match="expected int"):
        create_many("top", "top.epochs=two")


def test_replicate_seeds():
    config = run_config_defaults()
    assert Settings.from_run_config({**config, "seed": 3}).replicate_seeds() == (3,)
    assert Settings.from_run_config({**config, "seeds": "0 1, 2"}).replicate_seeds() == (0, 1, 2)
    for bad in ("0 0", "a b", "-1"):
        with pytest.raises(ValueError, match="seeds"):
            Settings.from_run_config({**config, "seeds": bad})


def test_a_track_may_alias_a_strategy_with_its_own_options():
    tracks = create_many("fala ce=fala", "ce.objective=ce-labels ce.lam-grid= ce.lam=0.01")
    assert type(tracks["ce"]) is type(tracks["fala"])
    assert tracks["ce"].name == "ce" and tracks["ce"].config.objective == "ce-labels"
    assert tracks["fala"].config.objective == "mse"
    for names, message in (("fala Ce=fala", "must match"), ("ce=fala ce=global", "twice"),
                           ("ce=", "alias=strategy"), ("x=nope", "unknown strategy")):
        with pytest.raises(ValueError, match=message):
            create_many(names)
    with pytest.raises(ValueError, match="not in the run"):
        create_many("ce=fala", "fala.lam=1")
