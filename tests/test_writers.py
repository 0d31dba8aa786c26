"""The writers task (PerPLM): the writers.jsonl reader and its errors, the Yelp / Amazon
converters, the synthetic generator, and the inherited prepare / load / head path."""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from tasks.base import DataError, HeadTrainingConfig, SyntheticSpec
from tasks.classification import most_active
from tasks.writers import CONVERTERS, SENTIMENT, WRITERS_FILE, WritersTask, read_writers

SMALL = SyntheticSpec(seed=3, users=3, public_users=40, items=60, documents=600)


def write_rows(folder: Path, rows: list[dict | str]) -> Path:
    """A writers.jsonl in ``folder`` (a str row is written verbatim)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    (folder / WRITERS_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder / WRITERS_FILE


def row(writer: str | int, label: str, n: int, **extra) -> dict:
    return {"writer_id": writer, "text": f"text number {n} of {writer}", "label": label, **extra}


# --- reading -----------------------------------------------------------------------------------


def test_valid_file_reads_with_sentiment_order_and_derived_ids(tmp_path):
    path = write_rows(tmp_path, [row("w1", "positive", 1), row(7, "neutral", 2, id="x"),
                                 row("w1", "negative", 3)])
    found = read_writers(path)
    assert found.classes == ["negative", "neutral", "positive"]
    assert [e.user_id for e in found.examples] == ["w1", "7", "w1"]
    assert [e.example_id for e in found.examples] == ["w1:1", "x", "w1:3"]
    assert [e.order for e in found.examples] == [1.0, 2.0, 3.0]  # file order without time
    assert found.details == {"writers": 2, "texts": 3, "label-set-size": 3,
                             "share-with-split": 0.0, "timed": False}


def test_two_sentiment_classes_put_positive_second_and_hashtags_sort(tmp_path):
    two = write_rows(tmp_path / "a", [row("w", "Positive", 1), row("w", "Negative", 2)])
    assert read_writers(two).classes == ["Negative", "Positive"]
    tags = write_rows(tmp_path / "b", [row("w", "#nlp", 1), row("w", "#ai", 2),
                                       row("v", "#zebra", 3)])
    assert read_writers(tags).classes == ["#ai", "#nlp", "#zebra"]


@pytest.mark.parametrize(("rows", "line", "problem"), [
    ([row("w", "a", 1), '{"writer_id": "w", "text": "x", ', row("w", "b", 3)], 2,
     "not a JSON object"),
    ([row("w", "a", 1), {"writer_id": "w", "text": "no label"}], 2, "missing 'label'"),
    ([row("w", "a", 1), {"writer_id": "w", "text": "   ", "label": "b"}], 2,
     "'text' must be a non-empty string"),
    ([row("w", "a", 1), row("w", "b", 2, id="d"), row("v", "a", 3, id="d")], 3,
     "duplicate id 'd' (first on line 2)"),
    ([row("w", "a", 1, split="dev"), row("w", "b", 2)], 1, "split 'dev' is not one of"),
    ([row("w", "a", 1, time="2016-01-01"), row("w", "b", 2)], 2, "no 'time' here"),
    ([row("w", "a", 1, time="yesterday"), row("w", "b", 2)], 1, "neither a number"),
    ([row("w", " a", 1), row("w", "b", 2)], 1, "leading or trailing blanks"),
    (["[1, 2]", row("w", "b", 2)], 1, "expected a JSON object, got list"),
])
def test_bad_rows_name_file_line_and_problem(tmp_path, rows, line, problem):
    path = write_rows(tmp_path, rows)
    with pytest.raises(DataError) as err:
        read_writers(path)
    assert f"{path}:{line}: " in str(err.value)
    assert problem in str(err.value)


def test_empty_file_and_single_label_are_errors(tmp_path):
    (tmp_path / WRITERS_FILE).write_text("\n\n")
    with pytest.raises(DataError, match="empty file"):
        read_writers(tmp_path / WRITERS_FILE)
    path = write_rows(tmp_path / "one", [row("w", "positive", 1), row("v", "positive", 2)])
    with pytest.raises(DataError, match="at least two classes"):
        read_writers(path)


def test_non_utf8_bytes_name_the_line(tmp_path):
    path = tmp_path / WRITERS_FILE
    path.write_bytes(json.dumps(row("w", "a", 1)).encode() + b"\n"
                     + b'{"writer_id": "w", "text": "caf\xe9", "label": "b"}\n')
    with pytest.raises(DataError, match=re.escape(f"{path}:2: not UTF-8 text")):
        read_writers(path)


def test_split_on_some_rows_of_a_writer_is_an_error_naming_the_writer(tmp_path):
    path = write_rows(tmp_path, [row("w1", "a", 1, split="train"), row("w2", "b", 2),
                                 row("w1", "b", 3)])
    with pytest.raises(DataError) as err:
        read_writers(path)
    assert f"{path}:3: writer 'w1'" in str(err.value)
    assert "'split' (line 1) and rows without (line 3)" in str(err.value)


def test_missing_writers_file_tells_what_the_folder_needs(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no writers.jsonl"):
        WritersTask().check_source(tmp_path)


# --- prepare / load: the source's split and the chronology ------------------------------------


def _public_rows(n: int) -> list[dict]:
    return [row(f"p{i % 3}", ("positive", "negative")[i % 2], 100 + i) for i in range(n)]


def test_given_split_is_what_load_user_uses(tmp_path):
    # w1's "test" rows come first in the file: a chronological split would pick the others
    labels = ["positive", "negative"] * 3
    splits = ["test", "test", "train", "finetune", "train", "finetune"]
    mine = [row("w1", y, i, id=f"m{i}", split=s)
            for i, (y, s) in enumerate(zip(labels, splits, strict=True))]
    write_rows(tmp_path / "src", mine + _public_rows(4))
    task = WritersTask()
    manifest = task.prepare(tmp_path / "src", tmp_path / "data", users=1)
    assert manifest["users"] == ["w1"] and manifest["classes"] == ["negative", "positive"]
    user = task.load_user(tmp_path / "data", "w1", 0.7)
    test_ids = {user.doc_ids[i] for i in user.test.docs}
    finetune_ids = {user.doc_ids[i] for i in user.finetune.docs}
    assert test_ids == {"m0", "m1"}
    assert finetune_ids == {"m2", "m3", "m4", "m5"}  # "train" and "finetune" are one side


def test_time_orders_the_chronological_split(tmp_path):
    # file order is the reverse of time order; times mix numbers and ISO strings
    times = ["2016-01-10", 1451865600, "2016-01-03T00:00:00Z", "2016-01-02", 1451606400.0,
             "2015-12-31T12:00:00", "2015-12-30", "2015-12-29", "2015-12-28", "2015-12-27"]
    mine = [row("w1", ("positive", "negative")[i % 2], i, id=f"m{i}", time=t)
            for i, t in enumerate(times)]
    public = [dict(r, time=f"2015-06-{i + 1:02d}") for i, r in enumerate(_public_rows(4))]
    write_rows(tmp_path / "src", mine + public)
    task = WritersTask()
    task.prepare(tmp_path / "src", tmp_path / "data", users=1)
    user = task.load_user(tmp_path / "data", "w1", 0.7)
    finetune_ids = {user.doc_ids[i] for i in user.finetune.docs}
    assert finetune_ids == {f"m{i}" for i in range(3, 10)}  # the 7 earliest
    assert {user.doc_ids[i] for i in user.test.docs} == {"m0", "m1", "m2"}


# --- converters ---------------------------------------------------------------------------------


def yelp_line(review_id: str, user: str, stars: float, text: str, day: int) -> str:
    return json.dumps({"review_id": review_id, "user_id": user, "business_id": "b1",
                       "stars": stars, "useful": 0, "funny": 0, "cool": 0, "text": text,
                       "date": f"2016-03-{day:02d} 00:44:40"})


YELP = [
    yelp_line("r1", "u1", 5, "Sick tacos, loved it", 9),
    yelp_line("r2", "u1", 1, "Cold food, rude staff", 10),
    yelp_line("r3", "u1", 3, "It was fine", 11),
    yelp_line("r4", "u2", 4.0, "Nice room", 12),
    yelp_line("r5", "u2", 2, "   ", 13),  # empty text: dropped
    yelp_line("r1", "u1", 5, "Sick tacos, loved it", 9),  # repeated review id: dropped
    yelp_line("r6", "u3", 3, "Average", 14),
]


def test_yelp_three_classes(tmp_path):
    (tmp_path / "review.json").write_text("\n".join(YELP) + "\n")
    manifest = CONVERTERS["yelp"](tmp_path / "review.json", tmp_path / "out", classes=3)
    assert manifest["class-mapping"] == {"1": "negative", "2": "negative", "3": "neutral",
                                         "4": "positive", "5": "positive"}
    assert manifest["reviews-read"] == 7 and manifest["kept"] == 5
    assert manifest["dropped"] == {"empty-text": 1, "three-stars": 0,
                                   "duplicate-review-id": 1, "writer-below-min-reviews": 0}
    assert manifest["per-label"] == {"negative": 1, "neutral": 2, "positive": 2}
    assert json.loads((tmp_path / "out" / "manifest.json").read_text()) == manifest
    found = read_writers(tmp_path / "out" / WRITERS_FILE)
    assert found.classes == list(SENTIMENT)
    first = found.examples[0]
    assert (first.example_id, first.user_id, first.label) == ("r1", "u1", "positive")
    assert found.details["timed"] is True


def test_yelp_two_classes_drops_three_stars_and_min_reviews_drops_writers(tmp_path):
    (tmp_path / "review.json").write_text("\n".join(YELP) + "\n")
    manifest = CONVERTERS["yelp"](tmp_path, tmp_path / "out", classes=2, min_reviews=2)
    assert manifest["class-mapping"]["3"] == "dropped" and manifest["classes"] == 2
    # u1 keeps r1, r2 (r3 is 3 stars); u2 keeps only r4 and u3 nothing -> u2 below 2 reviews
    assert manifest["dropped"] == {"empty-text": 1, "three-stars": 2,
                                   "duplicate-review-id": 1, "writer-below-min-reviews": 1}
    assert manifest["writers"] == 1 and manifest["labels"] == ["negative", "positive"]
    found = read_writers(tmp_path / "out" / WRITERS_FILE)
    assert [e.example_id for e in found.examples] == ["r1", "r2"]
    assert found.classes == ["negative", "positive"]


def amazon_line(reviewer: str, asin: str, overall: float, text: str | None, unix: int) -> str:
    record = {"reviewerID": reviewer, "asin": asin, "reviewerName": "A", "helpful": [0, 0],
              "overall": overall, "summary": "s", "unixReviewTime": unix,
              "reviewTime": "09 13, 2009"}
    if text is not None:
        record["reviewText"] = text
    return json.dumps(record)


def test_amazon_gzip_dump(tmp_path):
    lines = [amazon_line("A1", "B001", 5.0, "Great kettle", 1252800000),
             amazon_line("A1", "B002", 3.0, "Works", 1252900000),
             amazon_line("A1", "B003", 1.0, "Broke in a week", 1253000000),
             amazon_line("A2", "B001", 2.0, None, 1253100000),  # no reviewText: dropped
             amazon_line("A2", "B004", 4.0, "Good value", 1253200000)]
    dump = tmp_path / "reviews_Kitchen.json.gz"
    with gzip.open(dump, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    manifest = CONVERTERS["amazon"](dump, tmp_path / "three")
    assert manifest["kept"] == 4 and manifest["dropped"]["empty-text"] == 1
    assert manifest["per-label"] == {"negative": 1, "neutral": 1, "positive": 2}
    found = read_writers(tmp_path / "three" / WRITERS_FILE)
    assert [e.example_id for e in found.examples][:2] == ["A1:B001", "A1:B002"]
    assert found.examples[0].order == 1252800000.0  # unixReviewTime, as UTC
    two = CONVERTERS["amazon"](dump, tmp_path / "two", classes=2)
    assert two["kept"] == 3 and two["dropped"]["three-stars"] == 1
    assert two["source"] == str(dump) and two["converter"] == "amazon"
    broken = tmp_path / "broken.json.gz"
    broken.write_bytes(gzip.compress(b"\n".join(x.encode() for x in lines))[:40])
    with pytest.raises(DataError, match="not a complete gzip file"):
        CONVERTERS["amazon"](broken, tmp_path / "broken")


GOOD_LINE = {"yelp": yelp_line("r0", "u0", 5, "ok", 1),
             "amazon": amazon_line("A0", "B0", 5.0, "ok", 1252800000)}


@pytest.mark.parametrize(("name", "line"), [
    ("yelp", yelp_line("r9", "u9", 6, "Too good", 1)),
    ("yelp", yelp_line("r9", "u9", 3.5, "Half a star", 1)),
    ("amazon", amazon_line("A9", "B9", 0.0, "Zero", 1252800000)),
])
def test_stars_outside_one_to_five_name_file_and_line(tmp_path, name, line):
    dump = tmp_path / "dump.json"
    good = GOOD_LINE[name]
    dump.write_text(good + "\n" + line + "\n")
    expected = re.escape(f"{dump}:2: ") + r".* is not a whole number of stars in 1\.\.5"
    with pytest.raises(DataError, match=expected):
        CONVERTERS[name](dump, tmp_path / "out")
    assert not (tmp_path / "out" / WRITERS_FILE).exists()
    assert list((tmp_path / "out").iterdir()) == []  # the temporary file is gone too


# --- the synthetic world and the inherited path ------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("writers")
    task = WritersTask()
    for name, seed in (("a", SMALL.seed), ("b", SMALL.seed), ("c", SMALL.seed + 1)):
        spec = SyntheticSpec(seed=seed, users=SMALL.users, public_users=SMALL.public_users,
                             items=SMALL.items, documents=SMALL.documents)
        task.generate(root / name, spec)
    task.prepare(root / "a", root / "data", users=SMALL.users)
    return root


def test_generate_is_deterministic_for_a_seed(world):
    a, b, c = ((world / n / WRITERS_FILE).read_bytes() for n in "abc")
    assert a == b and a != c
    first = json.loads(a.splitlines()[0])
    assert set(first) == {"id", "writer_id", "text", "label", "time"}  # the real format


def test_private_writers_are_most_prolific_and_label_differently(world):
    found = read_writers(world / "a" / WRITERS_FILE)
    private = json.loads((world / "a" / "synthetic.json").read_text())["private-writer-ids"]
    assert sorted(most_active(found.examples, SMALL.users)) == private
    assert found.classes == ["negative", "neutral", "positive"]
    public = [e for e in found.examples if e.user_id not in private]
    assert len(public) <= SMALL.documents

    def rates(examples) -> np.ndarray:
        counts = np.array([sum(e.label == c for e in examples) for c in found.classes])
        return counts / counts.sum()

    population = rates(public)
    distances = [0.5 * np.abs(rates([e for e in found.examples if e.user_id == u])
                              - population).sum() for u in private]
    assert min(distances) > 0.15, distances


def test_documents_cap_the_public_texts(tmp_path):
    spec = SyntheticSpec(seed=0, users=2, public_users=30, items=40, documents=50)
    found = read_writers(WritersTask().generate(tmp_path, spec) / WRITERS_FILE)
    counts = Counter(e.user_id for e in found.examples)
    public = sorted(n for n in counts.values() if n != spec.items)
    assert len(public) == 30 and 30 <= sum(public) <= 50  # at least one text per writer
    with pytest.raises(ValueError, match="items must be >= 4"):
        WritersTask().generate(tmp_path / "tiny", SyntheticSpec(items=3))


def test_prepare_round_trip(world):
    task = WritersTask()
    data = world / "data"
    users = task.private_users(data)
    public = task.load_public(data)
    assert public.n_outputs == 3 and len(public.train) and len(public.valid)
    assert not set(public.doc_ids) & {d for u in users for d in task.load_user(
        data, u, 0.7).doc_ids}  # no private text reaches the server
    user = task.load_user(data, users[0], 0.7)
    assert len(user.finetune) == round(SMALL.items * 0.7)
    assert len(user.finetune) + len(user.test) == SMALL.items
    assert set(np.unique(user.test.labels)) <= {0.0, 1.0, 2.0}


def test_train_head_theta_one_reproduces_the_global_head(world):
    task = WritersTask()
    public = task.load_public(world / "data")
    features = np.random.default_rng(0).normal(size=(len(public.texts), 12)).astype(np.float32)
    config = HeadTrainingConfig(dim=8, epochs=1, batch_size=64, seed=0)
    head, metrics = task.train_head(features, public, config)
    assert head.n_outputs == 3
    assert set(metrics) == {"accuracy", "macro-f1", "examples"}
    feats = torch.from_numpy(features)
    batch = public.valid
    with torch.no_grad():
        through_theta = head.design(feats, batch).logits(torch.ones(head.dim))
        direct = head.classifier(torch.tanh(head.project(feats[torch.as_tensor(batch.docs)])))
    assert through_theta.shape == (len(batch), 3)
    torch.testing.assert_close(through_theta, direct)
