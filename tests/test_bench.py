"""The FaLA fit-vs-forwards benchmark runs on the contract (numbers are for the docs, not
asserted: timing belongs to benchmarks, not unit tests)."""

from __future__ import annotations

import pytest

from simulations.bench import bench_fala


def test_bench_fala_reports_both_timings(tiny_settings):
    result = bench_fala(tiny_settings, repeats=1)
    assert result["task"] == "news" and result["swap"] == "glove@1 -> tinybert@2"
    assert result["examples"] > 0 and result["documents-forwarded"] > 0
    assert len(result["fit-seconds"]) == len(result["forwards-seconds"]) == 1
    assert result["fit-seconds-median"] > 0 and result["solver-flops"] > 0


# -- swapfl bench flops ---------------------------------------------------------------------

TINY_BERT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 64, "max_position_embeddings": 64}


def test_flop_benchmark_on_a_tiny_bert(tiny_settings, tmp_path):
    """Every gradient strategy is measured; the counts order as the algebra says; the JSON
    carries both ratios (here on a 2-layer BERT, 4 texts x 32 tokens, one scenario user)."""
    import dataclasses
    import json

    from transformers import BertConfig

    from simulations.bench_flops import ModelSpec, run_flops_benchmark, write_result
    from strategies.registry import create, names
    from strategies.tuning import EncoderTuning

    settings = dataclasses.replace(tiny_settings, strategy_options="lora.epochs=1")
    result = run_flops_benchmark(settings, [ModelSpec("tiny-bert", "bert",
                                                      BertConfig(**TINY_BERT))],
                                 batch_size=4, length=32, scenario_users=1)
    model = result["models"]["tiny-bert"]
    assert model["failures"] == {}
    trained = {n for n in names() if isinstance(create(n), EncoderTuning)}
    assert set(model["strategies"]) == trained
    step = model["strategies"]
    frozen = model["frozen-forward"]["flops"]
    assert step["full"]["forward-flops"] == frozen  # same ops, trainable or not
    assert step["full"]["backward-flops"] > step["full"]["forward-flops"]
    assert 0 < step["lora"]["backward-flops"] < step["full"]["backward-flops"]
    assert 0 < step["lora"]["trainable-params"] < step["full"]["trainable-params"]
    # top: the layer under the last runs once (setup), each step runs the last layer only
    assert step["top"]["setup-flops"] > 0 and step["top"]["forward-flops"] < frozen
    assert step["top"]["backward-flops"] < step["full"]["backward-flops"]
    fala = result["fala-fit"]["tiny-bert"]
    assert fala["dim"] == settings.head_dim and fala["solve-flops"] > 0
    ratios = result["ratios"]
    assert ratios["lora-backward-over-fala-solve"]["tiny-bert"] == (
        step["lora"]["backward-flops"] / fala["solve-flops"])
    totals = result["scenario"]["mean-total-adaptation-flops"]
    assert totals["lora"] > totals["fala"] > 0
    assert ratios["total-adaptation-lora-over-fala"] == totals["lora"] / totals["fala"]
    written = json.loads(write_result(result, tmp_path / "flops.json").read_text())
    assert written["ratios"].keys() == ratios.keys() and "2 FLOPs per multiply-add" in (
        written["convention"])


def test_a_strategy_that_trains_nothing_has_no_backward(tiny_bert_dir):
    from backbones.transformer import TransformerBackbone
    from simulations.bench_flops import bench_texts, measure_training_step
    from strategies.tuning import EncoderTuning

    class TrainsNothing(EncoderTuning):
        name = "trains-nothing"

        def make_trainable(self, encoder, training):
            pass

    backbone = TransformerBackbone(tiny_bert_dir, max_length=32, batch_size=4)
    step = measure_training_step(TrainsNothing(), backbone, bench_texts(4))
    assert step["forward-flops"] > 0
    assert step["backward-flops"] == 0 and step["trainable-params"] == 0


def test_the_frozen_forward_counts_the_fused_cpu_attention(tiny_bert_dir):
    """Without dropout CPU attention runs a fused kernel torch's bare counter skips; the one
    counter every run uses adds it: 4·B·T²·hidden FLOPs per layer, and the run-time encoder
    reports the same figure as the benchmark."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from backbones.flops import flop_counter
    from backbones.transformer import TransformerBackbone
    from simulations.bench_flops import bench_texts, measure_model

    backbone = TransformerBackbone(tiny_bert_dir, max_length=32, batch_size=4)
    frozen = measure_model(backbone.model_dir, {}, bench_texts(4), 32)["frozen-forward"]
    assert frozen["flops"] == frozen["platform-flops"]
    batch = backbone.tokenizer(bench_texts(4), padding="max_length", truncation=True,
                               max_length=32, return_tensors="pt")
    with torch.inference_mode(), FlopCounterMode(display=False) as bare:
        backbone.model(**batch)
    with torch.inference_mode(), flop_counter() as ours:
        backbone.model(**batch)
    layers, size, tokens, hidden = 2, 4, 32, 32
    assert ours.get_total_flops() - bare.get_total_flops() == layers * 4 * size * tokens**2 * hidden


def test_bench_takes_a_subcommand(capsys):
    import pytest

    from simulations.cli import build_parser, cmd_bench_fala, cmd_bench_flops

    parser = build_parser()
    fala = parser.parse_args(["bench", "fala", "--repeats", "2"])
    assert fala.func is cmd_bench_fala and fala.repeats == 2
    assert str(fala.out).endswith("fala-fit-vs-forwards.json")
    flops = parser.parse_args(["bench", "flops", "--skip-default-scenario", "--set", "threads=2"])
    assert flops.func is cmd_bench_flops and flops.skip_default_scenario
    assert flops.set == ["threads=2"] and str(flops.out).endswith("flops.json")
    bare = parser.parse_args(["bench"])
    with pytest.raises(SystemExit):
        bare.func(bare)
    assert "bench fala" in capsys.readouterr().err


# -- swapfl bench scale ---------------------------------------------------------------------


def test_bench_scale_runs_flwr_and_reports_every_figure(tmp_path, tiny_bert_dir):
    """One size of the scale benchmark end to end on a tiny world: a real flwr run (two
    devices on one virtual node), its phases, the sampled memory of the process tree and the
    in-process profile of the devices; the figures are written, not judged."""
    import json

    from simulations.bench_scale import PROFILE_PARTS, bench_scale
    from simulations.cli import prepare
    from tests.conftest import tiny_run_config

    def config(users: int) -> dict:
        return prepare(tiny_run_config(tmp_path / "work", tmp_path / "results", users=users,
                                       schedule=f"glove tinybert={tiny_bert_dir}",
                                       strategies="fala", **{"devices-per-node": 2}))

    out = tmp_path / "scale.json"
    result = bench_scale([2], config, out, profile=2, timeout=600)
    assert json.loads(out.read_text()) == result
    size = result["sizes"]["2"]
    assert size["complete"] and size["exit-code"] == 0 and size["virtual-nodes"] == 1
    assert size["rows"] == 2 * (2 + 1)  # stage0 + fala at glove, fala after the swap
    assert size["peak-pss-bytes"] > 100 * 2**20 and size["pss-samples"] > 0
    for version in ("glove@1", "tinybert@2"):
        figures = size["versions"][version]
        assert figures["devices"] == 2 and figures["completed"] == 2
        assert figures["device-seconds"] > 0 and figures["messages-per-second"] > 0
        profile = size["profile"][version]
        parts = profile["parts-ms-per-device"]
        assert set(parts) == {label for label, _ in PROFILE_PARTS} | {
            "other (Python, numpy, torch glue)"}
        assert parts["evaluation metrics"] > 0 and parts["store writes (fsync included)"] > 0
        assert sum(parts.values()) == pytest.approx(profile["profiled-ms-per-device"])
    # the profiled devices' stores are removed; the run's own stay
    leftovers = list((tmp_path / "work" / "devices").glob("*/bench-profile-*"))
    assert leftovers == []


def test_bench_scale_refuses_bad_sizes_before_anything_starts(capsys):
    from simulations.cli import main

    with pytest.raises(SystemExit, match="positive device counts"):
        main(["bench", "scale", "--users", "100,0"])
    with pytest.raises(SystemExit, match="comma-separated integers"):
        main(["bench", "scale", "--users", "ten"])
    with pytest.raises(SystemExit, match="unknown run-config keys"):
        main(["bench", "scale", "--users", "10", "--set", "colour=blue"])
