"""Retrieval over a user's own history (strategies/retrieval.py) and the two strategies built on
it: PerPLM's ``hard-prompt`` and ``oppu``."""

from __future__ import annotations

import math

import numpy as np
import pytest

# imported explicitly so both register even before the package imports them
import strategies.hard_prompt  # noqa: F401
import strategies.oppu  # noqa: F401
from strategies.base import TrackState
from strategies.registry import create
from strategies.retrieval import (
    ITEM_SEPARATOR,
    HistoryRetriever,
    first_unit_starts,
    profile_text,
    top_terms,
)
from tasks.base import UserData
from tasks.classification import ClassBatch


def make_user(texts, labels, docs=None, groups=None, names=("negative", "positive")):
    """A hand-made user whose fine-tune split scores ``docs`` (default: every text once)."""
    docs = np.arange(len(texts)) if docs is None else np.asarray(docs)
    groups = np.full(len(docs), -1) if groups is None else np.asarray(groups)
    finetune = ClassBatch(docs.astype(np.int64), np.asarray(labels, dtype=np.float32),
                          groups.astype(np.int64))
    test = ClassBatch(np.zeros(1, np.int64), np.zeros(1, np.float32), np.full(1, -1))
    return UserData("u1", [f"d{i}" for i in range(len(texts))], list(texts), finetune, test,
                    label_names=tuple(names))


FOOTBALL = make_user(
    ["football match tonight", "football league results", "pasta recipe with basil",
     "football match football goal", "football scores", "pasta sauce"],
    [1, 1, 0, 1, 0, 0],
)


# -- retrieval ---------------------------------------------------------------------------------


def test_retrieve_never_returns_the_query_document_nor_later_items():
    retriever = HistoryRetriever(k=10).fit(FOOTBALL)
    everything = {item.document for item in retriever.retrieve(3, k=10)}
    assert everything == {0, 1, 4}  # every football text but itself; no zero-score pasta
    earlier = {item.document for item in retriever.retrieve(3, k=10, before=3)}
    assert earlier == {0, 1}
    assert retriever.retrieve(3, k=10, before=0) == []
    assert len(retriever.retrieve(3, k=2)) == 2


def test_context_puts_the_most_similar_item_last():
    user = make_user(["apple", "apple banana cherry", "apple banana", "apple banana cherry"],
                     [0, 1, 0, 1])
    retriever = HistoryRetriever(k=3).fit(user)
    scores = retriever.item_scores(3)
    assert scores[1] > scores[2] > scores[0] > 0  # shares 3 words > 2 words > 1 word
    assert [i.document for i in retriever.retrieve(3, k=3)] == [1, 2, 0]
    assert retriever.context(3) == ITEM_SEPARATOR.join(
        ["apple", "apple banana", "apple banana cherry"])
    labelled = HistoryRetriever(k=1, with_labels=True).fit(user)
    assert labelled.context(3) == "[positive] apple banana cherry"


def test_equal_scores_go_to_the_more_recent_item():
    user = make_user(["red wine", "red wine", "red wine", "red wine glass"], [0, 1, 0, 1])
    retriever = HistoryRetriever(k=3).fit(user)
    scores = retriever.item_scores(3)
    assert scores[0] == scores[1] == scores[2] > 0
    assert [i.position for i in retriever.retrieve(3, k=3)] == [2, 1, 0]
    assert [i.position for i in retriever.retrieve(3, k=2)] == [2, 1]
    assert [i.position for i in retriever.retrieve(3, k=2, before=2)] == [1, 0]


def test_a_document_seen_twice_is_retrieved_once_unless_its_labels_differ():
    user = make_user(["solar power", "solar power panels", "wind power"], [1, 0, 1, 1],
                     docs=[0, 0, 2, 0])
    plain = HistoryRetriever(k=4).fit(user)
    assert [(i.position, i.document) for i in plain.retrieve(1, k=4)] == [(3, 0), (2, 2)]
    labelled = HistoryRetriever(k=4, with_labels=True).fit(user)
    assert [(i.position, i.label) for i in labelled.retrieve(1, k=4)] == [
        (3, "positive"), (1, "negative"), (2, "positive")]


def test_training_contexts_never_see_the_same_unit_or_later_labels():
    # rows 0-1 are two alternatives of one question (one unit): neither sees the other's label
    user = make_user(["neural network paper", "neural network survey", "neural network code"],
                     [1, 0, 1], groups=[7, 7, -1])
    retriever = HistoryRetriever(k=4, with_labels=True).fit(user)
    assert first_unit_starts(user.finetune) == {0: 0, 1: 0, 2: 2}
    training = retriever.contexts([0, 1, 2], training=True)
    assert training[:2] == ["", ""]
    assert "[positive] neural network paper" in training[2]
    assert "neural network code" not in "".join(training)  # the last item is nobody's past
    predicting = retriever.contexts([0, 1, 2], training=False)
    assert all(predicting)
    assert "neural network paper" not in predicting[0]


def test_degenerate_users_give_empty_contexts_not_errors():
    alone = HistoryRetriever(k=4).fit(make_user(["only one text here"], [1]))
    assert alone.retrieve(0, k=4) == [] and alone.contexts([0], training=False) == [""]
    stop_words = HistoryRetriever(k=4).fit(make_user(["the of and", "a an the", "is it"],
                                                     [0, 1, 0]))
    assert stop_words.index_ is None
    assert not stop_words.query_scores("anything at all").any()
    assert stop_words.contexts([0, 1, 2], training=False) == ["", "", ""]
    normal = HistoryRetriever(k=4).fit(FOOTBALL)
    assert not normal.query_scores("the of and").any()  # a query of stop words scores 0
    assert not normal.query_scores("").any()


# -- profile -----------------------------------------------------------------------------------


def test_profile_text_of_a_hand_made_user():
    user = make_user(["apple banana", "apple cherry", "the of and"], [1, 0, 1])
    # TF-IDF by hand (smooth idf, l2 rows): idf(apple) = ln(4/3) + 1, idf(banana, cherry) =
    # ln(2) + 1; apple appears in two rows, so its summed weight leads; banana and cherry tie
    apple, rare = math.log(4 / 3) + 1, math.log(2) + 1
    norm = math.hypot(apple, rare)
    assert 2 * apple / norm > rare / norm
    assert profile_text(user) == (
        "label rates: negative 33%, positive 67%; top terms: apple, banana, cherry")
    assert top_terms(["zeta beta", "beta zeta", "alpha"], 2) == ["beta", "zeta"]  # a tie


def test_profile_of_stop_words_only_has_rates_only_and_rounds_halves_up():
    user = make_user(["the of", "and it", "is a", "we", "our", "you", "your", "be"],
                     [1, 0, 0, 0, 0, 0, 0, 0], names=("skipped", "clicked"))
    assert profile_text(user) == "label rates: skipped 88%, clicked 13%"


def test_unnamed_labels_fail_with_the_user_id():
    user = make_user(["apple", "pear"], [0, 2])
    with pytest.raises(ValueError, match="user u1: label 2 has no name"):
        profile_text(user)


# -- options -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name, options, message", [
    ("hard-prompt", {"k": "0"}, "k must be >= 1"),
    ("hard-prompt", {"max-length": "1"}, "max-length must be >= 2"),
    ("oppu", {"k": "-1"}, "k must be >= 0"),
    ("oppu", {"r": "0"}, "r >= 1"),
    ("oppu", {"depth": "2"}, "no option 'depth'"),
])
def test_bad_options_are_refused(name, options, message):
    with pytest.raises(ValueError, match=message):
        create(name, options)


def test_defaults():
    assert (create("hard-prompt").config.k, create("hard-prompt").config.max_length) == (4, 128)
    oppu = create("oppu").config
    assert (oppu.k, oppu.max_length, oppu.r, oppu.alpha) == (4, 128, 8, 8.0)


# -- the strategies on tiny worlds -------------------------------------------------------------

TASKS = ["aggression", "lamp-1"]  # lamp-1: alternatives of one question form one unit
FAST = {"oppu": {"epochs": "1"}}  # one epoch shows the wiring; the loop has its own tests


def _fit(name, model, data, seed=0, state=None):
    strategy = create(name, FAST.get(name))
    state = state or TrackState({"theta": np.ones(model.dim, np.float32)})
    return strategy, *strategy.fit(state, model, data, np.random.default_rng(seed))


@pytest.mark.parametrize("task", TASKS)
def test_hard_prompt_prepends_history_at_inference_only(task, task_world):
    world = task_world(task)
    glove, bert = world.models[:2]
    strategy, state, cost = _fit("hard-prompt", bert, world.data)
    assert set(state.arrays) == {"theta"}
    np.testing.assert_array_equal(state.theta, np.ones(bert.dim, np.float32))
    assert cost.forward_flops == cost.backward_flops == cost.backbone_forwards == 0
    for batch in (world.data.test, world.data.finetune):
        logits = strategy.predict(state, bert, world.data, batch, cost)
        assert logits.shape == (len(batch), bert.head.n_outputs)
        assert np.isfinite(logits).all()
        assert cost.extra_inference_tokens > 0
    plain = bert.design(world.data, world.data.test).logits(state.theta)
    prompted = strategy.predict(state, bert, world.data, world.data.test)
    assert not np.allclose(prompted, plain, atol=1e-4)  # the prompt really enters
    # before its own fit on a version, the track is the forked state on the plain inputs
    forked = TrackState({"theta": np.full(glove.dim, 0.5, np.float32)})
    np.testing.assert_array_equal(
        strategy.predict(forked, glove, world.data, world.data.test),
        glove.design(world.data, world.data.test).logits(forked.theta))


@pytest.mark.parametrize("task", TASKS)
def test_oppu_trains_a_per_user_lora_on_augmented_inputs(task, task_world):
    world = task_world(task)
    bert = world.models[1]
    strategy, state, cost = _fit("oppu", bert, world.data)
    assert cost.backward_flops > 0 and cost.forward_flops > 0
    assert cost.extra["head-only"] == 0
    encoder_keys = [k for k in state.arrays if k.startswith("encoder.")]
    assert encoder_keys and all("lora" in k for k in encoder_keys)
    assert all(k == "theta" or k.startswith(("head.", "encoder.")) for k in state.arrays)
    logits = strategy.predict(state, bert, world.data, world.data.test, cost)
    assert logits.shape == (len(world.data.test), bert.head.n_outputs)
    assert np.isfinite(logits).all()
    assert cost.extra_inference_tokens > 0


def test_oppu_starts_every_fit_from_the_release(task_world):
    world = task_world("aggression")
    bert = world.models[1]
    _, fresh, _ = _fit("oppu", bert, world.data, seed=1)
    earlier = TrackState({k: v + 1.0 for k, v in fresh.arrays.items()}, {"tuned-version": "x"})
    _, again, _ = _fit("oppu", bert, world.data, seed=1, state=earlier)
    assert again.arrays.keys() == fresh.arrays.keys()
    for key, value in fresh.arrays.items():
        np.testing.assert_array_equal(again.arrays[key], value)


def test_oppu_on_glove_tunes_the_head_only(task_world):
    world = task_world("aggression")
    glove = world.models[0]
    strategy, state, cost = _fit("oppu", glove, world.data)
    assert cost.extra["head-only"] == 1
    assert not [k for k in state.arrays if k.startswith("encoder.")]
    logits = strategy.predict(state, glove, world.data, world.data.test, cost)
    assert logits.shape == (len(world.data.test), glove.head.n_outputs)
    assert cost.extra_inference_tokens > 0  # context words averaged into the GloVe mean
