"""LaMP-1/2/3: the real file format with its awkward cases, the mapping onto classification
examples, the task metrics against hand-computed values, and the synthetic worlds."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tasks.base import DataError, HeadTrainingConfig, SyntheticSpec
from tasks.classification import ClassBatch
from tasks.lamp import Lamp1Task, Lamp2Task, Lamp3Task, LampTask, parse_date

TAG_LIST = ("sci-fi, based on a book, comedy, action, twist ending, dystopia, dark comedy, "
            "classic, psychology, fantasy, romance, thought-provoking, social commentary, "
            "violence, true story")


def movie_input(description: str) -> str:
    return ("Which tag does this movie relate to among the following tags? Just answer with the "
            f"tag name without further explanation. tags: [{TAG_LIST}] description: {description}")


def review_input(review: str) -> str:
    return ("What is the score of the following review on a scale of 1 to 5? just answer with "
            f"1, 2, 3, 4, or 5 without further explanation. review: {review}")


def citation_input(title: str, first: str, second: str) -> str:
    return (f'For an author who has written the paper with the title "{title}", which reference '
            "is related? Just answer with [1] or [2] without explanation. "
            f'[1]: "{first}" [2]: "{second}"')


def write_split(folder: Path, split: str, questions: list[dict], golds: dict[str, str] | None,
                task: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{split}_questions.json").write_text(json.dumps(questions))
    if golds is not None:
        (folder / f"{split}_outputs.json").write_text(json.dumps(
            {"task": task, "golds": [{"id": k, "output": v} for k, v in golds.items()]}))
    return folder


def review(entry_id: str, text: str, score: str, date) -> dict:
    return {"id": entry_id, "text": text, "score": score, "date": date}


def movie(entry_id: str, description: str, tag: str, date) -> dict:
    return {"id": entry_id, "description": description, "tag": tag, "date": date}


# --- the real format and its awkward cases ------------------------------------------------------


def test_id_mismatch_between_questions_and_outputs_lists_ids(tmp_path):
    questions = [{"id": qid, "input": movie_input(f"movie {qid}"),
                  "profile": [movie(f"{qid}0", "a film", "comedy", "2003-07-06")]}
                 for qid in ("1", "2")]
    write_split(tmp_path, "train", questions, {"1": "comedy", "3": "action"}, "LaMP_2")
    with pytest.raises(DataError, match="disagree on ids") as err:
        Lamp2Task().read_source(tmp_path)
    assert "['2']" in str(err.value) and "['3']" in str(err.value)
    # describe is where a researcher looks first: it counts the mismatch instead of failing
    details = Lamp2Task().describe(tmp_path)["id-mismatches"]["train"]
    assert details["questions-without-output"] == 1 and details["outputs-without-question"] == 1


@pytest.mark.parametrize("task, bad_input", [
    (Lamp3Task(), "Rate this product from 1 to 5: great blender"),
    (Lamp1Task(), 'For an author who has written the paper with the title "X", which reference '
                  'is related? [1]: "A"'),
    (Lamp2Task(), movie_input("a film").replace("dark comedy, ", "")),  # 14 tags, not LaMP-2's
])
def test_input_not_following_the_template_is_an_error(tmp_path, task, bad_input):
    profile = {1: [{"id": "9", "title": "T", "abstract": "", "date": "2005"}],
               2: [movie("9", "film", "comedy", "2001-01-01")],
               3: [review("9", "ok", "3", 1)]}[task.lamp_number]
    write_split(tmp_path, "dev", [{"id": "7", "input": bad_input, "profile": profile}],
                {"7": {1: "[1]", 2: "comedy", 3: "4"}[task.lamp_number]},
                f"LaMP_{task.lamp_number}")
    with pytest.raises(DataError, match=r"dev_questions.json: question 7: .*(template|tags)"):
        task.read_source(tmp_path)


def test_empty_and_non_utf8_files_are_named(tmp_path):
    (tmp_path / "train_questions.json").write_text("")
    with pytest.raises(DataError, match=r"train_questions.json: empty file"):
        Lamp3Task().read_source(tmp_path)
    (tmp_path / "train_questions.json").write_bytes(b'[{"id": "1", "input": "caf\xe9"}]')
    with pytest.raises(DataError, match=r"train_questions.json: not UTF-8"):
        Lamp3Task().read_source(tmp_path)


def test_unparsable_date_names_file_and_entry(tmp_path):
    write_split(tmp_path, "train", [{"id": "1", "input": review_input("fine"),
                                     "profile": [review("e42", "good", "4", "last tuesday")]}],
                {"1": "4"}, "LaMP_3")
    with pytest.raises(DataError, match=r"train_questions.json: question 1, profile entry e42: "
                                        r"date 'last tuesday'"):
        Lamp3Task().read_source(tmp_path)


def test_outputs_of_another_lamp_task_are_refused(tmp_path):
    write_split(tmp_path, "train", [{"id": "1", "input": movie_input("film"), "profile": []}],
                {"1": "comedy"}, "LaMP_3")
    with pytest.raises(DataError, match="is LaMP-3, not LaMP-2"):
        Lamp2Task().read_source(tmp_path)


@pytest.mark.parametrize("value, expected", [
    ("2005", "2005-01-01"), (2005, "2005-01-01"), ("2003-07-06", "2003-07-06"),
    (1057449600, "2003-07-06"), ("1057449600000", "2003-07-06"), ("07/06/2003", "2003-07-06"),
])
def test_dates_become_sortable_seconds(value, expected):
    from datetime import UTC, datetime

    assert datetime.fromtimestamp(parse_date(value, "here"), UTC).strftime("%Y-%m-%d") == expected


def test_user_based_split_makes_each_question_a_user(tmp_path):
    questions = [
        {"id": "10", "input": review_input("Broke after a week."),
         "profile": [review("a", "Love it", "5", "2010-01-02"),
                     review("b", "Meh", 3, "2009-05-01")]},
        {"id": "11", "input": review_input("Works."), "profile": [review("c", "Bad", "1", 1)]},
    ]
    write_split(tmp_path, "train", questions, {"10": "1", "11": "4.0"}, "LaMP_3")
    found = Lamp3Task().read_source(tmp_path)
    by_user = {u: [(e.split, e.text, e.label) for e in found.examples if e.user_id == u]
               for u in ("10", "11")}
    assert by_user["10"] == [("finetune", "Meh", "3"), ("finetune", "Love it", "5"),
                             ("test", "Broke after a week.", "1")]  # profile in date order
    assert by_user["11"] == [("finetune", "Bad", "1"), ("test", "Works.", "4")]
    orders = {e.text: e.order for e in found.examples}
    assert orders["Meh"] < orders["Love it"] < orders["Broke after a week."]  # test after profile
    assert found.details["split-kind"].startswith("user-based")


def test_time_based_split_dedupes_repeated_profiles_and_drops_answered_questions(tmp_path):
    profile = [movie("m1", "Aliens land.", "sci-fi", "2003-07-06"),
               movie("m2", "A wizard school.", "fantasy", "2004-01-01")]
    later = [*profile, movie("m3", "A heist goes wrong.", "action", "2005-03-01")]
    write_split(tmp_path, "train",
                [{"id": "1", "user_id": "u7", "input": movie_input("A heist goes wrong."),
                  "profile": profile}], {"1": "action"}, "LaMP_2")
    write_split(tmp_path, "dev",
                [{"id": "2", "user_id": "u7", "input": movie_input("Two lovers in Paris."),
                  "profile": later}], {"2": "romance"}, "LaMP_2")
    found = Lamp2Task().read_source(tmp_path)
    finetune = sorted(e.text for e in found.examples if e.split == "finetune")
    test = sorted(e.text for e in found.examples if e.split == "test")
    # m1, m2 once each; m3 is the train question's answer, so it may not be a fine-tune label
    assert finetune == ["A wizard school.", "Aliens land."]
    assert test == ["A heist goes wrong.", "Two lovers in Paris."]
    assert {e.user_id for e in found.examples} == {"u7"}
    assert sum(n for reason, n in found.skipped.items() if "repeating" in reason) == 1


def test_split_without_outputs_is_skipped_and_counted(tmp_path):
    write_split(tmp_path, "train", [{"id": "1", "input": review_input("Nice."),
                                     "profile": [review("a", "Good", "4", 1)]}], {"1": "4"},
                "LaMP_3")
    write_split(tmp_path, "test", [{"id": str(q), "input": review_input("?"), "profile": []}
                                   for q in (2, 3)], None, "LaMP_3")
    found = Lamp3Task().read_source(tmp_path)
    assert {e.user_id for e in found.examples} == {"1"}
    assert found.details["questions-without-outputs"] == {"test": 2}
    assert any("test questions without" in reason and n == 2
               for reason, n in found.skipped.items())


# --- LaMP-1: pairs --------------------------------------------------------------------------------


def test_lamp1_pairs_and_citation_profile_keys(tmp_path):
    own = [{"id": f"p{k}", "title": title, "citation": "A cited work", "date": year}
           for k, (title, year) in enumerate([("Deep nets", "2001"), ("Fast graphs", "2003"),
                                              ("Sparse codes", 2004)])]
    other = [{"id": "x1", "title": "Protein folding", "abstract": "...", "date": "1999"}]
    write_split(tmp_path, "train", [
        {"id": "q1", "input": citation_input("Neural routing", "Graph cuts", "Enzymes"),
         "profile": own},
        {"id": "q2", "input": citation_input("Amino acids", "Routers", "Peptides"),
         "profile": other + [{"id": "x2", "title": "Cell walls", "abstract": "", "date": "2000"}]},
    ], {"q1": "[1]", "q2": " [2] "}, "LaMP_1")
    found = Lamp1Task().read_source(tmp_path)
    assert found.classes == ["not-cited", "cited"]
    q1 = [(e.example_id, e.text, e.label) for e in found.examples if e.group == "q1"]
    assert q1 == [("q1/q/q1/1", "Neural routing </s> Graph cuts", "cited"),
                  ("q1/q/q1/2", "Neural routing </s> Enzymes", "not-cited")]
    q2 = [e.label for e in found.examples if e.group == "q2"]
    assert q2 == ["not-cited", "cited"]
    titles = {"Deep nets", "Fast graphs", "Sparse codes"}
    pairs: dict[str, list] = {}
    for e in found.examples:
        if e.split == "finetune" and e.user_id == "q1":
            pairs.setdefault(e.group, []).append(e)
    assert len(pairs) == 3  # one pair per profile paper
    for group in pairs.values():
        assert len(group) == 2 and {e.label for e in group} == {"cited", "not-cited"}
        query = group[0].text.split(" </s> ")[0]
        cited = next(e for e in group if e.label == "cited").text.split(" </s> ")[1]
        other_title = next(e for e in group if e.label == "not-cited").text.split(" </s> ")[1]
        assert cited in titles - {query}  # another paper of the same author
        assert other_title in {"Protein folding", "Cell walls"}  # a paper of another author
    # the construction is seeded by (user, entry): reading again gives the same pairs
    assert Lamp1Task().read_source(tmp_path).examples == found.examples


def test_lamp1_evaluate_picks_the_higher_logit_per_question():
    # questions: A (gold [1], logits 2 > 1 -> [1] right), B (gold [2], 0.5 > 0.2 -> [1] wrong),
    # C (gold [2], -1 < 3 -> [2] right); D has one candidate only and is not a whole question.
    batch = ClassBatch(docs=np.arange(7), labels=np.array([1, 0, 0, 1, 0, 1, 1], np.float32),
                       groups=np.array([0, 0, 1, 1, 2, 2, 3]))
    logits = np.array([[2.0], [1.0], [0.5], [0.2], [-1.0], [3.0], [9.0]])
    metrics = Lamp1Task().evaluate(batch, logits)
    # answers truth [1,2,2], predicted [1,1,2]: per-class F1 = 2/3 and 2/3
    assert metrics == pytest.approx({"accuracy": 2 / 3, "macro-f1": 2 / 3, "examples": 3})


def test_lamp3_mae_and_rmse_on_the_argmax_rating():
    batch = ClassBatch(docs=np.arange(4), labels=np.array([4, 0, 2, 3], np.float32),
                       groups=np.full(4, -1))  # gold ratings 5, 1, 3, 4
    logits = np.eye(5)[[2, 0, 4, 3]] * 3.0  # predicted ratings 3, 1, 5, 4: errors -2, 0, 2, 0
    metrics = Lamp3Task().evaluate(batch, logits)
    assert metrics == pytest.approx({"mae": 1.0, "rmse": math.sqrt(2), "accuracy": 0.5,
                                     "examples": 4})
    spec = Lamp3Task.metric_spec
    assert spec.primary == "mae" and not spec.higher_is_better and "rmse" in spec.lower_is_better


# --- synthetic worlds, partitions, the head -----------------------------------------------------

TASKS = [Lamp1Task, Lamp2Task, Lamp3Task]
SMALL = dict(users=2, public_users=6, items=8, documents=60)


def profile_counts(folder: Path) -> dict[str, set[str]]:
    entries: dict[str, set[str]] = {}
    for split in ("train", "dev"):
        for question in json.loads((folder / f"{split}_questions.json").read_text()):
            entries.setdefault(question["user_id"], set()).update(
                entry["id"] for entry in question["profile"])
    return entries


@pytest.fixture(scope="module")
def worlds(tmp_path_factory) -> dict[str, tuple[LampTask, Path, Path, dict]]:
    """Each task's small synthetic world, generated and prepared once."""
    out = {}
    for cls in TASKS:
        task = cls()
        root = tmp_path_factory.mktemp(task.name)
        task.generate(root / "source", SyntheticSpec(seed=5, **SMALL))
        manifest = task.prepare(root / "source", root / "prepared", SMALL["users"])
        out[task.name] = (task, root / "source", root / "prepared", manifest)
    return out


@pytest.mark.parametrize("cls", TASKS)
def test_generate_is_seeded_and_private_users_are_the_most_active(tmp_path, cls):
    task = cls()
    files = ("train_questions.json", "train_outputs.json", "dev_questions.json",
             "dev_outputs.json", "synthetic.json")
    first = task.generate(tmp_path / "a", SyntheticSpec(seed=3, **SMALL))
    again = task.generate(tmp_path / "b", SyntheticSpec(seed=3, **SMALL))
    other = task.generate(tmp_path / "c", SyntheticSpec(seed=4, **SMALL))
    assert all((first / f).read_bytes() == (again / f).read_bytes() for f in files)
    assert (first / files[0]).read_bytes() != (other / files[0]).read_bytes()
    private = set(json.loads((first / "synthetic.json").read_text())["private-users"])
    counts = {user: len(ids) for user, ids in profile_counts(first).items()}
    assert len(private) == 2 and len(counts) == 8
    assert min(counts[u] for u in private) > max(n for u, n in counts.items() if u not in private)
    asked = json.loads((first / "train_questions.json").read_text()) + json.loads(
        (first / "dev_questions.json").read_text())
    assert all(sum(q["user_id"] == u for q in asked) >= 4 for u in private)
    assert set(task.select_users(task.read_source(first), 2)) == private


# LaMP-1 stores a question as its two candidate papers (one example each), whose gold is the
# cited one; LaMP-2/3 store one example per question, labelled with the gold output.
CANDIDATES_PER_QUESTION = {"lamp-1": 2, "lamp-2": 1, "lamp-3": 1}


@pytest.mark.parametrize("name", ["lamp-1", "lamp-2", "lamp-3"])
def test_prepare_round_trip_finetune_is_profile_and_test_is_questions(worlds, name):
    task, source, prepared, manifest = worlds[name]
    private = json.loads((source / "synthetic.json").read_text())["private-users"]
    assert sorted(manifest["users"]) == sorted(private)
    assert manifest["classes"] == list(task.classes)
    per_candidate = CANDIDATES_PER_QUESTION[name]
    golds = {}
    questions = []
    for split in ("train", "dev"):
        questions += json.loads((source / f"{split}_questions.json").read_text())
        golds.update({g["id"]: g["output"] for g in json.loads(
            (source / f"{split}_outputs.json").read_text())["golds"]})
    entries = profile_counts(source)
    public = task.load_public(prepared)
    assert not any(doc.startswith(f"{user}/") for doc in public.doc_ids for user in private)
    assert len(public.train) + len(public.valid) == manifest["public-examples"]
    for user in private:
        data = task.load_user(prepared, user, 0.7)
        asked = [q for q in questions if q["user_id"] == user]
        assert len(data.finetune) == per_candidate * len(entries[user])
        assert len(data.test) == per_candidate * len(asked)
        test_texts = [data.texts[i] for i in data.test.docs]
        if per_candidate == 2:  # the gold candidate of each question is the cited one
            cited = [t for t, y in zip(test_texts, data.test.labels, strict=True) if y == 1]
            assert len(cited) == len(asked)
        else:
            gold = {task.parse_input(q["input"], "")[0]: golds[q["id"]] for q in asked}
            labels = [task.classes[int(y)] for y in data.test.labels]
            assert labels == [gold[t] for t in test_texts]


def test_lamp2_head_design_with_theta_one_is_the_head(worlds):
    task, _, prepared, _ = worlds["lamp-2"]
    public = task.load_public(prepared)
    assert public.n_outputs == 15
    features = np.random.default_rng(0).normal(size=(len(public.texts), 12)).astype(np.float32)
    head, metrics = task.train_head(features, public, HeadTrainingConfig(dim=6, epochs=1))
    assert set(metrics) == {"accuracy", "macro-f1", "examples"}
    feats = torch.from_numpy(features)
    batch = public.train
    with torch.no_grad():
        via_design = head.design(feats, batch).logits(torch.ones(6))
        direct = head.classifier(torch.tanh(head.project(feats[torch.as_tensor(batch.docs)])))
    assert via_design.shape == (len(batch), 15)
    torch.testing.assert_close(via_design, direct)
