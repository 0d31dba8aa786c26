"""Benchmark: FLOPs of every gradient strategy at BERT-base / RoBERTa-base scale, and what
FaLA's closed-form fit costs next to them.

One run writes one JSON file with three parts:

1. **One training step per strategy** on randomly initialised BERT-base and RoBERTa-base
   (``BertConfig()`` defaults; RoBERTa-base sizes), batch 32 × 128 tokens (every text reaches
   128 tokens; checked). Every registered strategy that trains by gradient (an
   ``EncoderTuning``) builds its encoder through its own hooks — ``build_encoder`` then
   ``make_trainable(encoder, training=True)`` — so a newly registered one appears without an
   edit here. The loss is the sum of squares of the pooled vectors (no task head: the head's
   ~10⁶ FLOPs would only blur the backbone's figures). Forward and backward are counted
   separately; the frozen forward (what ``global`` and FaLA run at inference) too. ``top``
   runs the layers under the last one once, frozen: those FLOPs are its ``setup-flops``, not
   part of its step.
2. **FaLA's solve at that scale**: the real solver (``FalaConfig.make_solver``) on an n × d
   system, d = the run's ``head-dim`` and n = FaLA's ``max-examples`` (the cap: the largest
   system the configured FaLA ever solves, so the ratio below is its smallest value), plus the
   frozen forwards of those n examples.
3. **Total adaptation FLOPs per user in a scenario** (default: the app's defaults — news,
   glove → bert → roberta): the real ``lora`` and ``fala`` tracks of a ``client.device.Device``
   on the first ``users`` private users, with the releases built or reused from the work dir
   like a run. Forward + backward + solver FLOPs of every swap, as the run's rows report them.

Convention: 2 FLOPs per multiply-add, as ``torch.utils.flop_counter.FlopCounterMode`` counts
mm/addmm/bmm/SDPA (element-wise ops, softmax, norms and embedding lookups count 0); the
Cholesky/eigendecomposition/solves of FaLA are counted analytically (strategies/fala/ridge.py).
FLOPs depend only on shapes, so random weights and a simple tokenizer give the same figures as
pretrained ones.

On CPU, attention without dropout (every frozen forward, and training with attention dropout
0) runs the fused kernel ``aten._scaled_dot_product_flash_attention_for_cpu``, which torch
2.13's counter does not know; ``backbones.flops.flop_counter`` (used here and by every run)
counts it with torch's own SDPA formulas. ``platform-flops`` is the figure the run-time code
(``TransformerBackbone``) reports for the same frozen forward — a consistency check.
"""

from __future__ import annotations

import gc
import json
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertModel,
    PretrainedConfig,
    PreTrainedModel,
    RobertaConfig,
    RobertaModel,
)
from transformers.utils import logging as hf_logging

from backbones.base import Backbone
from backbones.flops import flop_counter
from backbones.roberta_pretrain import train_bpe_tokenizer
from backbones.transformer import TransformerBackbone, minilm_dir
from simulations.settings import Settings
from strategies.fala.strategy import FalaConfig
from strategies.registry import create, names, parse_options
from strategies.tuning import EncoderTuning
from tasks.files import atomic_write

log = logging.getLogger(__name__)

CONVENTION = ("2 FLOPs per multiply-add: torch.utils.flop_counter.FlopCounterMode counts "
              "mm/addmm/bmm/SDPA, plus the fused CPU attention kernel with torch's SDPA formula "
              "(element-wise ops, softmax, norms, embedding lookups count 0); "
              "Cholesky, eigendecomposition and triangular solves counted analytically "
              "(strategies/fala/ridge.py)")
RATIO_STRATEGIES = ("lora", "fala")  # the two strategies the headline ratios compare
SCENARIO_COST_KEYS = ("forward-flops", "backward-flops", "solver-flops", "backbone-forwards",
                      "examples-used", "trainable-params", "fit-seconds")

# Common words, about one token each for the MiniLM WordPiece vocabulary and for a byte-level
# BPE trained on the texts: 200 of them fill 128 tokens (``check_full_length`` verifies it).
WORDS = tuple("""the city team market report school water music season people police game
river family house night money world health north power story table paper movie garden
street energy winter summer island doctor letter window friend animal station village
country capital mountain history number science coffee airport museum library student
teacher company engine camera bridge forest ocean""".split())


@dataclass(frozen=True)
class ModelSpec:
    """A model to measure: a name for the report, its family and its (random-init) config."""

    name: str
    arch: str  # a key of ARCHITECTURES
    config: PretrainedConfig


def base_models() -> list[ModelSpec]:
    """BERT-base (``BertConfig()`` defaults) and RoBERTa-base (its published sizes)."""
    roberta = RobertaConfig(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1,
                            layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2)
    return [ModelSpec("bert-base", "bert", BertConfig()),
            ModelSpec("roberta-base", "roberta", roberta)]


def _minilm_tokenizer(texts: Sequence[str], folder: Path) -> None:
    """The offline all-MiniLM-L6-v2 WordPiece tokenizer (BERT's uncased vocabulary)."""
    AutoTokenizer.from_pretrained(minilm_dir(), local_files_only=True).save_pretrained(folder)


def _bpe_tokenizer(texts: Sequence[str], folder: Path) -> None:
    """A byte-level BPE trained on the benchmark texts, with RoBERTa's special tokens at
    RoBERTa's ids (<s> 0, <pad> 1, </s> 2): what the server's own RoBERTa uses."""
    train_bpe_tokenizer(texts, vocab_size=1000, out_dir=folder)


ARCHITECTURES: dict[str, tuple[type[PreTrainedModel], Callable[[Sequence[str], Path], None]]] = {
    "bert": (BertModel, _minilm_tokenizer),
    "roberta": (RobertaModel, _bpe_tokenizer),
}
"""Model class and tokenizer writer per family (nothing downloads)."""


def bench_texts(n: int, words: int = 200, seed: int = 0) -> list[str]:
    """``n`` seeded texts of ``words`` words (long enough for 128 tokens)."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=words)) for _ in range(n)]


def save_random_model(spec: ModelSpec, texts: Sequence[str], folder: Path, seed: int = 0
                      ) -> Path:
    """A seeded random-init model and its tokenizer saved in ``folder`` (a local HF folder)."""
    try:
        model_class, write_tokenizer = ARCHITECTURES[spec.arch]
    except KeyError:
        raise ValueError(f"{spec.name}: unknown architecture {spec.arch!r}; known: "
                         f"{sorted(ARCHITECTURES)}") from None
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    bars_were_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a "writing shards" bar per model is noise here
    try:
        model_class(spec.config).save_pretrained(folder)
    finally:
        if bars_were_enabled:
            hf_logging.enable_progress_bar()
    write_tokenizer(texts, folder)
    return folder


def check_full_length(backbone: TransformerBackbone, texts: Sequence[str], length: int) -> None:
    """Every text must fill ``length`` tokens: FLOPs are quoted for exactly (batch, length)."""
    mask = backbone.tokenizer(list(texts), padding="max_length", truncation=True,
                              max_length=length, return_tensors="pt")["attention_mask"]
    short = [i for i, row in enumerate(mask) if int(row.sum()) < length]
    if tuple(mask.shape) != (len(texts), length) or short:
        raise ValueError(f"{backbone.model_dir}: texts {short[:5]} are shorter than {length} "
                         f"tokens (mask shape {tuple(mask.shape)}); use longer texts")


class _ReleaseView:
    """What ``EncoderTuning.build_encoder`` reads of a release: its backbone."""

    def __init__(self, backbone: Backbone) -> None:
        self.backbone = backbone


def measure_training_step(strategy: EncoderTuning, backbone: TransformerBackbone,
                          texts: Sequence[str]) -> dict[str, Any]:
    """FLOPs of one training step of ``strategy`` over all ``texts`` as one batch.

    The encoder is built by the strategy's own hooks; the loss is Σ pooled². Without trainable
    weights nothing is differentiated and the backward is 0."""
    started = time.perf_counter()
    with flop_counter() as setup:  # work done once when the encoder is built (top's layers)
        encoder = strategy.build_encoder(_ReleaseView(backbone), list(texts), None)
        strategy.make_trainable(encoder, training=True)
    mask = getattr(encoder, "attention_mask", None)
    if mask is not None and tuple(mask.shape) != (len(texts), backbone.max_length):
        raise ValueError(f"{strategy.name}: the encoder's tokens have shape {tuple(mask.shape)}, "
                         f"expected ({len(texts)}, {backbone.max_length})")
    trainable = sum(p.numel() for p in encoder.trainable_parameters().values())
    encoder.train()
    rows = torch.arange(len(texts))
    with flop_counter() as forward:
        loss = encoder(rows).pow(2).sum()
    backward_flops = 0
    if loss.requires_grad:
        with flop_counter() as backward:
            loss.backward()
        backward_flops = int(backward.get_total_flops())
    result = {"forward-flops": int(forward.get_total_flops()), "backward-flops": backward_flops,
              "setup-flops": int(setup.get_total_flops()),
              "platform-setup-flops": int(encoder.setup_flops), "trainable-params": int(trainable),
              "seconds": time.perf_counter() - started}
    del encoder, loss
    gc.collect()
    return result


def gradient_strategies(options_text: str = "") -> dict[str, EncoderTuning]:
    """Every registered strategy that trains by gradient, with the run's strategy options."""
    options = parse_options(options_text)
    chosen = {}
    for name in names():
        strategy = create(name, options.get(name))
        if isinstance(strategy, EncoderTuning):
            chosen[name] = strategy
    return chosen


def measure_model(model_dir: Path, strategies: dict[str, EncoderTuning], texts: Sequence[str],
                  length: int) -> dict[str, Any]:
    """Frozen forward and one training step per strategy on the model in ``model_dir``.

    A strategy whose hooks raise is reported under ``failures`` (and logged with its
    traceback); the others are still measured."""
    backbone = TransformerBackbone(model_dir, max_length=length, batch_size=len(texts))
    check_full_length(backbone, texts, length)
    config = backbone.model.config
    tokens = backbone.tokenizer(list(texts), padding="max_length", truncation=True,
                                max_length=length, return_tensors="pt")
    started = time.perf_counter()
    with torch.inference_mode(), flop_counter() as frozen:
        backbone.model(**tokens)
    seconds = time.perf_counter() - started
    _, per_text = backbone.encode_with_flops(texts)  # the run-time accounting, as devices do
    result: dict[str, Any] = {
        "layers": int(config.num_hidden_layers), "hidden": int(config.hidden_size),
        "parameters": backbone.num_parameters(),
        "frozen-forward": {"flops": int(frozen.get_total_flops()),
                           "platform-flops": int(per_text.sum()), "seconds": seconds},
        "strategies": {}, "failures": {},
    }
    log.info("%s: frozen forward %.3g FLOPs", model_dir.name, result["frozen-forward"]["flops"])
    for name, strategy in strategies.items():
        try:
            measured = measure_training_step(strategy, backbone, texts)
        except Exception as err:  # reported in the JSON and the CLI's exit code, never dropped
            log.exception("%s: strategy %s could not be measured", model_dir.name, name)
            result["failures"][name] = f"{type(err).__name__}: {err}"
            continue
        result["strategies"][name] = measured
        log.info("%s %-12s forward %.3g backward %.3g setup %.3g trainable %d (%.1fs)",
                 model_dir.name, name, measured["forward-flops"], measured["backward-flops"],
                 measured["setup-flops"], measured["trainable-params"], measured["seconds"])
    return result


def fala_solve_flops(config: FalaConfig, n: int, dim: int, seed: int = 0) -> int:
    """Solver FLOPs of FaLA's own solver on an n × dim system (they depend on the sizes, the
    λ grid and the objective, not on the values)."""
    rng = np.random.default_rng(seed)
    rows, targets = rng.standard_normal((n, dim)), rng.standard_normal(n)
    solver = config.make_solver(random_state=seed)
    if config.full_rank:
        solver.fit(rows, rng.standard_normal((n, dim)), targets)
    else:
        solver.fit(rows, z=targets, y=(targets > 0).astype(np.float64))
    return int(solver.solver_flops_)


def scenario_costs(settings: Settings, users: int = 1,
                   strategy_names: Sequence[str] = RATIO_STRATEGIES) -> dict[str, Any]:
    """Fit costs of ``strategy_names`` per swap for the first ``users`` private users, through
    the real device loop (first personalization, then before_swap / fit per swap)."""
    from client.device import Device
    from client.store import PrivateStore
    from server.releases import build_or_load_release
    from simulations.data import prepare_dataset
    from strategies.first_personalization import create_first_personalization
    from tasks.registry import get_task
    from tasks.release import open_release

    started = time.perf_counter()
    data_dir = prepare_dataset(settings.work_dir, settings.task, settings.data_source,
                               settings.users, settings.synthetic())
    releases = settings.work_dir / "releases"
    manifests = [build_or_load_release(entry, settings, data_dir, releases)
                 for entry in settings.schedule]
    task = get_task(settings.task)
    private = task.private_users(data_dir)[:users]
    options = parse_options(settings.strategy_options)
    per_user: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    with tempfile.TemporaryDirectory(dir=settings.work_dir, prefix="bench-devices-") as stores:
        for index, user in enumerate(private):
            data = task.load_user(data_dir, user, settings.finetune_fraction)
            device = Device(
                task, data, index, PrivateStore(Path(stores) / user),
                {name: create(name, options.get(name)) for name in strategy_names},
                create_first_personalization(settings.personalize, settings.personalize_options),
                releases, seed=settings.seed,
            )
            device.personalize(open_release(releases, manifests[0].release_id))
            swaps: dict[str, dict[str, dict[str, float]]] = {}
            for old, new in zip(manifests, manifests[1:], strict=False):
                metrics = device.swap(open_release(releases, new.release_id))
                swaps[f"{old.version} -> {new.version}"] = {
                    name: {key: metrics.get(f"{name}/{key}", 0.0) for key in SCENARIO_COST_KEYS}
                    for name in strategy_names}
            per_user[user] = swaps
    totals = {name: _adaptation_flops(per_user, name) / max(len(per_user), 1)
              for name in strategy_names}
    return {"task": settings.task,
            "schedule": " -> ".join(entry.version for entry in settings.schedule),
            "users": len(per_user), "per-user": per_user,
            "mean-total-adaptation-flops": totals,
            "seconds": time.perf_counter() - started}


def _adaptation_flops(per_user: dict, name: str) -> float:
    """Forward + backward + solver FLOPs of strategy ``name``, summed over users and swaps."""
    return sum(costs[name]["forward-flops"] + costs[name]["backward-flops"]
               + costs[name]["solver-flops"]
               for swaps in per_user.values() for costs in swaps.values())


def run_flops_benchmark(settings: Settings, models: Sequence[ModelSpec] | None = None,
                        batch_size: int = 32, length: int = 128, scenario_users: int = 1,
                        skip_scenario: bool = False) -> dict[str, Any]:
    """The whole benchmark (see the module docstring); returns the JSON-ready result."""
    if batch_size < 1 or length < 2:
        raise ValueError(f"batch_size must be >= 1 and length >= 2, got {batch_size}, {length}")
    if not skip_scenario and not 1 <= scenario_users <= settings.users:
        raise ValueError(f"scenario_users must be in [1, users = {settings.users}], got "
                         f"{scenario_users}")
    torch.set_num_threads(settings.threads)
    started = time.perf_counter()
    models = base_models() if models is None else list(models)
    strategies = gradient_strategies(settings.strategy_options)
    texts = bench_texts(batch_size, seed=settings.seed)
    measured: dict[str, Any] = {}
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    # random-init weights are cheap to rebuild and ~0.5 GB each: a temp folder, not a cache
    with tempfile.TemporaryDirectory(dir=settings.work_dir, prefix="bench-models-") as folder:
        for spec in models:
            model_dir = save_random_model(spec, texts, Path(folder) / spec.name, settings.seed)
            measured[spec.name] = {"arch": spec.arch, **measure_model(model_dir, strategies,
                                                                      texts, length)}
            gc.collect()
    fala = create("fala", parse_options(settings.strategy_options).get("fala"))
    n, dim = fala.config.max_examples, settings.head_dim
    solve = fala_solve_flops(fala.config, n, dim, settings.seed)
    fala_fit = {}
    for name, result in measured.items():
        forwards = result["frozen-forward"]["flops"] * n // batch_size
        fala_fit[name] = {"examples": n, "dim": dim, "solve-flops": solve,
                          "forward-flops": forwards, "total-flops": forwards + solve}
    ratios = _ratios(measured, fala_fit)
    scenario = None
    if not skip_scenario:
        scenario = scenario_costs(settings, scenario_users)
        totals = scenario["mean-total-adaptation-flops"]
        ratios["total-adaptation-lora-over-fala"] = (
            totals["lora"] / totals["fala"] if totals["fala"] else None)
    return {
        "convention": CONVENTION,
        "shape": {"batch-size": batch_size, "tokens": length},
        "threads": settings.threads,
        "models": measured,
        "non-gradient-strategies": sorted(set(names()) - set(strategies)),
        "fala-fit": fala_fit,
        "ratios": ratios,
        "scenario": scenario,
        "notes": _notes(n, dim),
        "seconds": time.perf_counter() - started,
    }


def _notes(n: int, dim: int) -> dict[str, str]:
    return {
        "step": "one training step over the whole batch, loss = sum of squares of the "
                "mean-pooled output (no task head), train mode (dropout on) as in the loop",
        "trainable-params": "encoder weights the strategy trains; in runs every strategy "
                            "also trains the task head and θ",
        "setup-flops": "forward work done once when the encoder is built (top: embeddings and "
                       "every layer under the last); not part of the step",
        "inputs": "every strategy sees the plain texts: contexts a strategy prepends in runs "
                  "(OPPU's retrieved items) and stages before task tuning (PerPLM's masked "
                  "LM) are not part of this step",
        "frozen-forward": "what global and FaLA run at inference; platform-flops is the "
                          "run-time encoder's own figure for it (a consistency check)",
        "non-gradient-strategies": "no backward: global and keep-theta do no work after a "
                                   "swap, FaLA runs frozen forwards and a solve (fala-fit)",
        "fala-fit": f"FaLA's configured solver on n = max-examples = {n} rows of d = head-dim "
                    f"= {dim} (the cap: the largest system it solves; the λ grid's "
                    "leave-one-out included) plus n frozen forwards at the benchmark's shape",
        "scenario": "CostReport sums of the real device loop (first personalization, then "
                    "before_swap and fit per swap); FaLA's before_swap works on the old "
                    "model's cached embeddings and is not charged; the run-time counter "
                    "misses fused CPU attention in frozen and validation forwards",
    }


def _ratios(measured: dict[str, Any], fala_fit: dict[str, Any]) -> dict[str, Any]:
    """LoRA's one-step backward over FaLA's solve, per model (the FaLA paper's "> 1000x"), and
    one LoRA step over FaLA's whole fit including its frozen forwards."""
    backward, step = {}, {}
    for name, result in measured.items():
        lora = result["strategies"].get("lora")
        if lora is None:
            backward[name] = step[name] = None
            continue
        backward[name] = lora["backward-flops"] / fala_fit[name]["solve-flops"]
        step[name] = ((lora["forward-flops"] + lora["backward-flops"])
                      / fala_fit[name]["total-flops"])
    return {"lora-backward-over-fala-solve": backward,
            "lora-step-over-fala-fit-with-forwards": step,
            "total-adaptation-lora-over-fala": None}


def write_result(result: dict[str, Any], out_file: Path) -> Path:
    """The result as indented JSON (atomically: a reader never sees half a file)."""
    atomic_write(out_file, json.dumps(result, indent=2))
    return out_file
