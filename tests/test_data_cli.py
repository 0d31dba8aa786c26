"""`swapfl data generate|describe`, `swapfl prepare` and `swapfl tasks` on every registered task,
and the run's config.json recording every resolved key."""

from __future__ import annotations

import json

import pytest

from simulations.cli import app_defaults, main, prepare, resolve_run_config
from tasks.registry import task_names


@pytest.mark.parametrize("task", task_names())
def test_generate_then_describe(task, tmp_path, capsys):
    out = tmp_path / task
    assert main(["data", "generate", "--task", task, "--out", str(out), "--users", "3",
                 "--public-users", "20", "--items", "24", "--documents", "120"]) == 0
    capsys.readouterr()
    assert main(["data", "describe", "--task", task, str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["task"] == task and info["users"] >= 23  # 3 private + 20 public users
    assert info["skipped"] == {}  # synthetic files are clean
    assert main(["data", "describe", "--task", task, str(out)]) == 0  # readable text form
    assert "users" in capsys.readouterr().out


def test_describe_of_a_wrong_folder_names_what_is_missing(tmp_path):
    with pytest.raises(SystemExit, match="data: .*"):
        main(["data", "describe", "--task", "news", str(tmp_path)])


def test_prepare_sets_data_dir_and_reuses_it(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    sets = ["users=3", "synthetic-public-users=20", "synthetic-items=24",
            "synthetic-documents=120", 'task="writers"']
    config = prepare(resolve_run_config(None, sets, app_defaults()))
    data_dir = tmp_path / ".swapfl" / "data"
    assert config["data-dir"].startswith(str(data_dir / "writers-"))
    assert (tmp_path / config["data-dir"] / "public" / "manifest.json").is_file()
    with caplog.at_level("INFO"):
        assert prepare(resolve_run_config(None, sets, app_defaults()))["data-dir"] == \
            config["data-dir"]
    assert "reusing prepared partitions" in caplog.text


def test_prepare_refuses_bad_config_before_any_data_work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="unknown strategy 'nope'"):
        prepare(resolve_run_config(None, ["strategies=nope"], app_defaults()))
    with pytest.raises(SystemExit, match="task 'books' is not registered"):
        prepare(resolve_run_config(None, ['task="books"'], app_defaults()))
    with pytest.raises(SystemExit, match="data: data-source .*news.tsv"):
        prepare(resolve_run_config(None, [f"data-source={tmp_path}"], app_defaults()))
    assert not (tmp_path / ".swapfl").exists()


def test_tasks_lists_every_task_with_its_primary_metric(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    for task in task_names():
        assert task in out
    assert "primary auc" in out


def test_config_json_records_every_resolved_key(tmp_path):
    from server.results import ResultsWriter
    from simulations.settings import Settings

    settings = Settings.from_run_config({**app_defaults(), "work-dir": str(tmp_path)})
    ResultsWriter(tmp_path / "run", settings.to_record())
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())
    assert set(recorded) == set(app_defaults())
    assert recorded["finetune-fraction"] == 0.7
    assert recorded["personalize-options"] == "" and recorded["seeds"] == ""
    assert recorded["schedule"] == "glove bert roberta"


def test_convert_a_yelp_dump_then_describe_it(tmp_path, capsys):
    reviews = [{"review_id": f"r{i}", "user_id": f"u{i % 2}", "business_id": "b", "stars": s,
                "text": f"review number {i}", "date": f"2016-03-0{i + 1} 00:44:40"}
               for i, s in enumerate([5, 1, 3, 4, 2, 5])]
    dump = tmp_path / "review.json"
    dump.write_text("".join(json.dumps(r) + "\n" for r in reviews))
    out = tmp_path / "writers"
    assert main(["data", "convert", "--from", "yelp", str(dump), "--out", str(out),
                 "--classes", "2"]) == 0
    capsys.readouterr()
    rows = [json.loads(line) for line in (out / "writers.jsonl").read_text().splitlines()]
    assert len(rows) == 5  # the 3-star review is dropped with --classes 2
    assert {r["label"] for r in rows} == {"negative", "positive"}
    assert main(["data", "describe", "--task", "writers", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["users"] == 2
