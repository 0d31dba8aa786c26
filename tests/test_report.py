"""Reports built from tiny hand-made rows: two tasks, two seeds, a strategy missing from one
version, and the sections that appear only when their tracks exist."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from simulations import report
from simulations.report import (
    build_task_reports,
    load_runs,
    summarize,
    write_full_report,
    write_report,
)
from simulations.statistics import t_interval

USERS = ("user-000", "user-001", "user-002", "user-003")
GAIN = {"stage0": 0.2, "global": 0.0, "fala": 0.1, "fala-kmeans": 0.08, "ce": 0.05}
FORWARD_FLOPS = {"global": 0.0, "fala": 2e9, "fala-kmeans": 3e9, "ce": 2e9, "stage0": 1e6}
ABLATION_TRACKS = {"strategies": "global fala fala-kmeans ce=fala",
                   "strategy-options": "ce.objective=ce-labels ce.lam-grid= ce.lam=0.01"}
QUALITY = {  # a task's metrics from one quality level (higher = better)
    "aggression": lambda level: {"accuracy": level, "f1": level - 0.1, "macro-f1": level - 0.05},
    "lamp-3": lambda level: {"mae": 1.5 - level, "rmse": 1.8 - level, "accuracy": level},
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_rows(task: str, seeds=(0, 1), missing=(("roberta@3", "fala-kmeans"),)) -> list[dict]:
    """Rows of three versions; ``missing`` (version, strategy) pairs have no rows."""
    rows = []
    versions = {1: "glove@1", 2: "bert@2", 3: "roberta@3"}
    for seed in seeds:
        for index, version in versions.items():
            tracks = [s for s in GAIN if s != "stage0" or index == 1]
            for strategy in tracks:
                if (version, strategy) in missing:
                    continue
                for u, user in enumerate(USERS):
                    level = 0.5 + 0.05 * u + GAIN[strategy] + 0.01 * seed
                    work = index >= 2 or strategy == "stage0"
                    rows.append({
                        "run": f"run-{task}", "task": task, "seed": seed, "version": version,
                        "version-index": index, "arch": version.split("@")[0], "user": user,
                        "strategy": strategy, **QUALITY[task](level), "examples": 10 + 5 * u,
                        "forward-flops": FORWARD_FLOPS[strategy] if work else 0.0,
                        "backward-flops": 0.0, "solver-flops": 1e5 if work else 0.0,
                        "fit-seconds": 0.1 * work, "state-bytes": 500.0,
                    })
    return rows


def write_run(folder: Path, rows: list[dict], **config) -> Path:
    folder.mkdir(parents=True)
    (folder / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "config.json").write_text(json.dumps({"task": rows[0]["task"], **config}))
    return folder


@pytest.fixture(scope="module")
def two_task_report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    runs = [write_run(root / task, make_rows(task), **ABLATION_TRACKS)
            for task in ("aggression", "lamp-3")]
    return write_full_report(runs, out_dir=root / "report", progress=False)


def read_csv(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_full_report_writes_markdown_csvs_and_figures_for_both_tasks(two_task_report):
    out = two_task_report.parent
    assert two_task_report.name == "report.md"
    names = ["summary.csv", "paired.csv"] + [f"{task}-{kind}.png"
                                            for task in ("aggression", "lamp-3")
                                            for kind in ("bars", "cost-quality", "users")]
    for name in names:
        assert (out / name).stat().st_size > 0, name
        if name.endswith(".png"):
            assert (out / name).read_bytes()[:8] == PNG_MAGIC
    text = two_task_report.read_text()
    assert "## Task aggression" in text and "## Task lamp-3" in text
    assert "(aggression-bars.png)" in text and "(lamp-3-cost-quality.png)" in text
    assert "only approximate" in text  # pooled F1 is flagged as an approximation
    assert "2 per multiply-add" in text


def test_a_strategy_missing_from_a_version_is_just_absent(two_task_report):
    summary = read_csv(two_task_report.parent / "summary.csv")
    present = {(r["task"], r["version"], r["strategy"]) for r in summary}
    assert ("aggression", "bert@2", "fala-kmeans") in present
    assert ("aggression", "roberta@3", "fala-kmeans") not in present
    assert ("lamp-3", "glove@1", "stage0") in present
    assert ("lamp-3", "bert@2", "stage0") not in present


def test_two_seeds_give_t_intervals_over_seed_means(two_task_report):
    rows = make_rows("aggression")
    record = next(r for r in read_csv(two_task_report.parent / "summary.csv")
                  if (r["task"], r["version"], r["strategy"]) == ("aggression", "bert@2", "fala"))
    seed_means = [np.mean([r["macro-f1"] for r in rows if r["seed"] == seed
                           and (r["version"], r["strategy"]) == ("bert@2", "fala")])
                  for seed in (0, 1)]
    expected = t_interval(seed_means)
    assert float(record["macro-f1-ci-low"]) == pytest.approx(expected.low)
    assert float(record["macro-f1-ci-high"]) == pytest.approx(expected.high)
    assert record["seeds"] == "2" and record["users"] == "4"


def test_paired_csv_counts_wins_in_the_metrics_direction(two_task_report):
    paired = {(r["task"], r["version"], r["strategy"]): r
              for r in read_csv(two_task_report.parent / "paired.csv")}
    lamp = paired[("lamp-3", "bert@2", "fala")]  # fala's MAE is 0.1 below global's
    assert (lamp["metric"], lamp["better"], lamp["baseline"]) == ("mae", "lower", "global")
    assert (lamp["wins"], lamp["ties"], lamp["losses"]) == ("4", "0", "0")
    assert float(lamp["mean-difference"]) == pytest.approx(-0.1)
    assert float(lamp["ci-high"]) < 0
    aggression = paired[("aggression", "bert@2", "fala")]
    assert aggression["better"] == "higher" and aggression["wins"] == "4"
    assert float(aggression["ci-low"]) > 0
    assert ("lamp-3", "bert@2", "global") not in paired


def test_ablation_and_objective_lambda_sections_read_the_registry(two_task_report):
    text = two_task_report.read_text()
    assert text.count("### Ablations (FaLA Table 4 analogue)") == 2
    assert "selection=kmeans" in text  # fala-kmeans next to fala, with what differs
    assert "objective=ce-labels" in text  # the alias ce runs fala with other options
    assert text.count("### Objective × λ (FaLA Table 5 analogue)") == 2
    assert "| ce-labels |" in text and "λ=0.01" in text
    assert "× fala total" in text


def test_no_ablation_sections_without_their_tracks(tmp_path):
    rows = [r for r in make_rows("aggression", seeds=(0,)) if r["strategy"] in
            ("stage0", "global", "fala")]
    run = write_run(tmp_path / "run", rows, strategies="global fala")
    text = write_full_report([run], progress=False).read_text()
    assert "## Task aggression" in text
    assert "Ablations" not in text and "Objective × λ" not in text
    assert "1 seed: no CI" in text
    assert (run / "report.md").is_file()  # one run: the report goes into the run folder


def test_pooled_differs_from_user_macro_and_rmse_pools_as_root_mean_square():
    rows = make_rows("lamp-3", seeds=(0,))
    record = next(r for r in summarize(rows) if (r["version"], r["strategy"]) ==
                  ("bert@2", "fala"))
    chosen = [r for r in rows if (r["version"], r["strategy"]) == ("bert@2", "fala")]
    counts = np.array([r["examples"] for r in chosen])
    mae, rmse = (np.array([r[m] for r in chosen]) for m in ("mae", "rmse"))
    assert record["mae-mean"] == pytest.approx(mae.mean())
    assert record["mae-pooled"] == pytest.approx(np.sum(counts * mae) / counts.sum())
    assert record["mae-pooled"] != pytest.approx(record["mae-mean"])
    assert record["rmse-pooled"] == pytest.approx(math.sqrt(np.sum(counts * rmse**2)
                                                            / counts.sum()))
    assert "mae-ci-low" not in record  # one seed: no interval


def test_users_are_averaged_over_seeds_before_the_spread():
    rows = make_rows("aggression", seeds=(0, 1))
    record = next(r for r in summarize(rows) if (r["version"], r["strategy"]) ==
                  ("bert@2", "global"))
    per_user = [0.5 + 0.05 * u + 0.005 for u in range(4)]  # seeds 0 and 1 differ by 0.01
    assert record["accuracy-mean"] == pytest.approx(np.mean(per_user))
    assert record["accuracy-std"] == pytest.approx(np.std(per_user, ddof=1))
    assert record["users"] == 4 and record["seeds"] == 2


def test_write_report_keeps_the_short_table_and_adds_the_full_report(tmp_path):
    rows = [r for r in make_rows("aggression") if r["strategy"] != "ce"]
    run = write_run(tmp_path / "run", rows, strategies="global fala fala-kmeans")
    md = write_report(run)
    assert md.name == "table.md"
    text = md.read_text()
    assert text.startswith("Task aggression") and "| bert@2 | fala | 4 |" in text
    assert (run / "report.md").is_file() and (run / "paired.csv").is_file()


@pytest.mark.parametrize("content, error, match", [
    (None, FileNotFoundError, "rows.jsonl not found"),
    ("", ValueError, "has no rows"),
    ('{"version": "a", "version-index": 1, "strategy": "s", "user": "u"}\n{oops\n',
     ValueError, r"rows.jsonl:2: not a JSON row"),
    ('{"version": "a"}\n', ValueError, r"rows.jsonl:1: row lacks"),
])
def test_bad_run_folders_are_clear_errors(tmp_path, content, error, match):
    tmp_path.joinpath("run").mkdir()
    if content is not None:
        tmp_path.joinpath("run", "rows.jsonl").write_text(content)
    with pytest.raises(error, match=match):
        write_full_report([tmp_path / "run"], progress=False)


def test_unknown_baseline_lists_the_known_strategies(tmp_path):
    run = write_run(tmp_path / "run", make_rows("aggression", seeds=(0,)), **ABLATION_TRACKS)
    with pytest.raises(ValueError, match=r"unknown baseline 'nope'.*'fala-kmeans'"):
        write_full_report([run], baseline="nope", progress=False)
    (run / "config.json").unlink()  # without a config the rows tell
    with pytest.raises(ValueError, match=r"unknown baseline 'nope'.*'stage0'"):
        write_full_report([run], baseline="nope", progress=False)


def test_a_task_without_the_baseline_says_so(tmp_path):
    rows = make_rows("aggression", seeds=(0,))
    other = [r for r in make_rows("lamp-3", seeds=(0,)) if r["strategy"] != "global"]
    runs = load_runs([write_run(tmp_path / "a", rows), write_run(tmp_path / "b", other)],
                     progress=False)
    reports = {r.task: r for r in build_task_reports(runs, "global", n_resamples=100)}
    assert reports["aggression"].paired and not reports["lamp-3"].paired
    text = "\n".join(report._main_section(reports["lamp-3"]))
    assert "baseline 'global' is absent" in text


def test_several_runs_show_progress_and_default_to_a_report_folder(tmp_path, capsys):
    runs = [write_run(tmp_path / name, make_rows("aggression", seeds=(seed,)), **ABLATION_TRACKS)
            for name, seed in (("seed0", 0), ("seed1", 1))]
    loaded = load_runs(runs, progress=True)
    assert "reading rows" in capsys.readouterr().err
    assert len({r["seed"] for run in loaded for r in run.rows}) == 2
    out = report.default_out_dir(runs)
    assert out.parent == tmp_path and out.name.startswith("report-")


def test_device_profile_adds_seconds_joules_and_a_sentence(tmp_path):
    from simulations.budgets import load_profiles

    rows = [r for r in make_rows("aggression", seeds=(0,)) if r["strategy"] in
            ("stage0", "global", "fala", "fala-kmeans")]
    for row in rows:
        row["peak-memory-bytes"] = 5e9 if (row["strategy"], row["user"]) == (
            "fala-kmeans", "user-001") else 1e6
    run = write_run(tmp_path / "run", rows, strategies="global fala fala-kmeans")
    text = write_full_report([run], device_profile="low-end-phone", progress=False).read_text()
    phone = load_profiles()["low-end-phone"]
    fala = next(r for r in rows if (r["version"], r["strategy"]) == ("bert@2", "fala"))
    seconds = phone.estimate(fala)["device-seconds"]  # every user does the same work here
    assert "### Device budget on low-end-phone" in text
    assert f"- bert@2: fala fits in {seconds:.3g} s (p90 over users) on low-end-phone" in text
    assert "fala-kmeans needs" in text and "exceeds its memory for 1/4 users" in text
    summary = read_csv(run / "summary.csv")
    record = next(r for r in summary if (r["version"], r["strategy"]) == ("bert@2", "fala"))
    assert float(record["device-joules-mean"]) == pytest.approx(
        phone.estimate(fala)["device-joules"])


def test_an_unknown_device_profile_fails_before_reading_rows(tmp_path):
    tmp_path.joinpath("run").mkdir()
    tmp_path.joinpath("run", "rows.jsonl").write_text("{not json\n")
    with pytest.raises(ValueError, match=r"unknown device profile 'phone'.*'low-end-phone'"):
        write_full_report([tmp_path / "run"], device_profile="phone", progress=False)


def test_device_failures_are_counted_per_version_and_status(tmp_path):
    run = write_run(tmp_path / "run", make_rows("aggression", seeds=(0,)))
    records = [{"version": "bert@2", "seed": 0, "node": node, "strategy": strategy,
                "status": status, "reason": "offline"}
               for node, status in ((11, "missed"), (12, "failed"))
               for strategy in ("global", "fala")]
    records.append({"version": "roberta@3", "seed": 0, "node": 11, "strategy": "fala",
                    "status": "missed", "reason": "offline"})
    (run / "failures.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    text = write_full_report([run], progress=False).read_text()
    section = text[text.index("## Device failures"):]
    assert "| run | bert@2 | 0 | global | failed | 1 |" in section
    assert "| run | bert@2 | 0 | fala | missed | 1 |" in section
    assert "| run | roberta@3 | 0 | fala | missed | 1 |" in section
    assert "roberta@3 | 0 | global" not in section
    clean = write_run(tmp_path / "clean", make_rows("aggression", seeds=(0,)))
    assert "Device failures" not in write_full_report([clean], progress=False).read_text()
