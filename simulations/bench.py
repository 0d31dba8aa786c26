"""Benchmark: FaLA's device fit time vs the time of the frozen forwards it needs.

Measured side by side in one process on the same user, interleaved repetitions, cold feature
cache each time (so the fit pays for its own forwards). Goal from the FaLA design: fit time
<= 1.2x the forwards, i.e. the solve and bookkeeping are nearly free.
"""

from __future__ import annotations

import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from backbones.cache import PUBLIC_FEATURES
from server.releases import build_or_load_release
from simulations.data import prepare_dataset
from simulations.settings import Settings, parse_schedule
from strategies.first_personalization import create_first_personalization
from strategies.registry import create
from tasks.registry import get_task
from tasks.release import open_release

log = logging.getLogger(__name__)


def bench_fala(settings: Settings, repeats: int = 5, user_index: int = 0) -> dict:
    """Time FaLA's fit and the frozen forwards of its examples on the schedule's last swap."""
    torch.set_num_threads(settings.threads)
    data_dir = prepare_dataset(settings.work_dir, settings.task, settings.data_source,
                               settings.users, settings.synthetic())
    releases = settings.work_dir / "releases"
    old_entry, new_entry = settings.schedule[-2], settings.schedule[-1]
    old = open_release(releases, build_or_load_release(old_entry, settings, data_dir,
                                                       releases).release_id)
    new = open_release(releases, build_or_load_release(new_entry, settings, data_dir,
                                                       releases).release_id)
    task = get_task(settings.task)
    user = task.private_users(data_dir)[user_index]
    data = task.load_user(data_dir, user, settings.finetune_fraction)
    fala = create("fala")
    first = create_first_personalization(settings.personalize, settings.personalize_options)
    base, _ = first.personalize(old, data)
    state = fala.before_swap(base.replace(seed=0), old, data)
    docs = data.finetune.subset(state.arrays["selected"]).documents()
    texts = [data.texts[i] for i in docs]
    forwards, fits, solver_flops = [], [], 0
    for _ in range(repeats):
        data.private_cache = None
        start = time.perf_counter()
        new.backbone.encode_with_flops(texts)
        forwards.append(time.perf_counter() - start)
        with tempfile.TemporaryDirectory(prefix="swapfl-bench-cold-") as cold:
            PUBLIC_FEATURES.use(cold)  # an empty store: the fit pays for its own forwards
            data.private_cache = None
            _, cost = fala.fit(state, new, data, np.random.default_rng(0))
            PUBLIC_FEATURES.clear()
        fits.append(cost.fit_seconds)
        solver_flops = cost.solver_flops
    result = {
        "task": settings.task, "swap": f"{old_entry.version} -> {new_entry.version}",
        "examples": int(len(state.arrays["selected"])), "documents-forwarded": len(texts),
        "threads": settings.threads, "repeats": repeats,
        "forwards-seconds-median": statistics.median(forwards),
        "fit-seconds-median": statistics.median(fits),
        "fit-over-forwards": statistics.median(fits) / statistics.median(forwards),
        "solver-flops": solver_flops, "forwards-seconds": forwards, "fit-seconds": fits,
    }
    log.info("FaLA fit %.3fs vs forwards %.3fs: ratio %.3f", result["fit-seconds-median"],
             result["forwards-seconds-median"], result["fit-over-forwards"])
    return result


def run_benchmarks(run_config: dict, out_file: Path, repeats: int) -> dict:
    settings = Settings.from_run_config(run_config)
    results = {}
    for schedule in ("glove bert", "bert roberta"):
        entries = parse_schedule(schedule)
        # keep the release ids of the full schedule: the index is part of the release
        full = {e.name: e for e in settings.schedule}
        pair = tuple(full.get(e.name, e) for e in entries)
        results[schedule.replace(" ", "->")] = bench_fala(
            Settings(**{**settings.__dict__, "schedule": pair}), repeats)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(json.dumps(results, indent=2))
    return results
