"""The tasks of ``compare``, checked against their definitions: the adding target is the sum
of the marked values, the copy target is the input's symbols after the delimiter, and each
trivial predictor's measured loss equals the baseline computed analytically."""

import numpy as np
import pytest

from keras_lstm_variants.commands.tasks import (
    COPY_BLANK,
    COPY_DELIMITER,
    OBJECTS,
    SUBJECTS,
    TASKS,
    VOCABULARY,
    adding_data,
    agreement_data,
    copy_tokens,
    decode,
)

ADDING, COPY, AGREEMENT = TASKS["adding"], TASKS["copy"], TASKS["agreement"]


# ----------------------------------------------------------------------------------- adding
@pytest.mark.parametrize("length", [2, 3, 7, 50])
def test_adding_target_is_the_sum_of_the_two_marked_values(length):
    x, y = adding_data(length, 500, seed=length)
    assert x.shape == (500, length, 2) and y.shape == (500, 1)
    assert x.dtype == y.dtype == np.float32
    values, markers = x[..., 0], x[..., 1]
    assert np.all((0 <= values) & (values < 1))
    assert np.all(np.isin(markers, [0, 1])) and np.all(markers.sum(1) == 2)
    for sequence, target in zip(x, y, strict=True):
        first, second = np.flatnonzero(sequence[:, 1])
        # One marker in each half.
        assert first < length // 2 <= second
        assert target[0] == pytest.approx(sequence[first, 0] + sequence[second, 0], abs=1e-6)


def test_adding_markers_cover_each_half_uniformly():
    length = 10
    x, _ = adding_data(length, 20_000, seed=0)
    counts = x[..., 1].sum(0)  # how often each step is marked
    expected = 20_000 / (length // 2)
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected))


def test_adding_trivial_predictor_measures_the_analytic_baseline():
    """Predicting 1 has MSE Var(X1 + X2) = 1/6; measured on 20,000 sequences, within five
    standard errors (the squared error of a triangular variable has variance 7/180)."""
    x, y = adding_data(100, 20_000, seed=1)
    loss, metric = ADDING.score(ADDING.predictions(y), y)
    assert ADDING.baseline(100) == pytest.approx(1 / 6)
    assert loss == metric
    assert abs(loss - ADDING.baseline(100)) < 5 * np.sqrt(7 / 180 / 20_000)
    # The half solution (the second value, and 0.5 for the first) is above the threshold.
    half = 0.5 + x[..., 0][x[..., 1] == 1].reshape(-1, 2)[:, 1:]
    half_loss, _ = ADDING.score(half, y)
    assert abs(half_loss - 1 / 12) < 0.005 and not ADDING.solved(half_loss)
    assert ADDING.solved(ADDING.score(y + 0.05, y)[1])  # MSE 0.0025


# ------------------------------------------------------------------------------------- copy
@pytest.mark.parametrize("length", [1, 2, 9, 40])
def test_copy_target_is_the_input_symbols_after_the_delimiter(length):
    inputs, targets = copy_tokens(length, 64, seed=length)
    assert inputs.shape == targets.shape == (64, length + 20)
    symbols = inputs[:, :10]
    assert np.all((1 <= symbols) & (symbols <= 8))
    for sequence, target in zip(inputs, targets, strict=True):
        delimiter = np.flatnonzero(sequence == COPY_DELIMITER)
        # The delimiter comes after the symbols and T - 1 blanks, 10 steps before the end.
        assert delimiter.tolist() == [10 + length - 1] and len(sequence) - delimiter[0] == 11
        assert np.all(np.delete(sequence, [*range(10), delimiter[0]]) == COPY_BLANK)
        np.testing.assert_array_equal(target[-10:], sequence[:10])
        assert np.all(target[:-10] == COPY_BLANK)
    x, y = COPY.data(length, 64, seed=length)
    np.testing.assert_array_equal(x.argmax(-1), inputs)
    np.testing.assert_array_equal(y, targets)
    assert np.all(x.sum(-1) == 1)


@pytest.mark.parametrize("length", [1, 30, 500])
def test_copy_memoryless_predictor_measures_the_analytic_baseline(length):
    _, y = COPY.data(length, 100, seed=0)
    loss, recall = COPY.score(COPY.predictions(y), y)
    # Probabilities are clipped to [1e-7, 1 - 1e-7] as Keras does: at most 1e-7 per step.
    assert loss == pytest.approx(10 * np.log(8) / (length + 20), abs=2e-7)
    assert COPY.baseline(length) == pytest.approx(loss, abs=2e-7)
    assert recall < 0.5 and not COPY.solved(recall)


def test_copy_score_of_a_perfect_and_a_wrong_prediction():
    _, y = COPY.data(12, 50, seed=3)
    perfect = np.eye(10, dtype=np.float32)[y]
    loss, recall = COPY.score(perfect, y)
    assert loss < 1e-5 and recall == 1.0 and COPY.solved(recall)
    shifted = np.eye(10, dtype=np.float32)[(y % 8) + 1]  # every recalled symbol wrong
    assert COPY.score(shifted, y)[1] == 0.0


# -------------------------------------------------------------------------------- agreement
def test_agreement_constant_half_measures_log_2_and_chance():
    x, y = AGREEMENT.data(20, 300, seed=0)
    assert x.shape == (300, 22, AGREEMENT.features) and y.shape == (300, 1)
    loss, accuracy = AGREEMENT.score(np.full(y.shape, 0.5), y)
    assert loss == pytest.approx(np.log(2)) == pytest.approx(AGREEMENT.baseline(20))
    assert accuracy == pytest.approx(np.mean(y == 0))  # 0.5 counts as "singular"
    loss, accuracy = AGREEMENT.score(np.where(y > 0.5, 0.9, 0.1), y)
    assert loss == pytest.approx(-np.log(0.9)) and accuracy == 1.0


# ------------------------------------------------------------------- agreement sentences
SINGULAR = {pair[0] for pair in SUBJECTS + OBJECTS}
PLURAL = {pair[1] for pair in SUBJECTS + OBJECTS}


def read(x):
    """Each sentence's words, and its nouns' numbers (1 plural, 0 singular, -1 not a noun)."""
    words = np.array([decode(sentence) for sentence in x])
    numbers = np.where(np.isin(words, sorted(PLURAL)), 1, -1)
    return words, np.where(np.isin(words, sorted(SINGULAR)), 0, numbers)


@pytest.mark.parametrize("distance", [1, 2, 5, 37])
def test_labels_agree_with_the_subject(distance):
    """An independent reading of each sentence, word by word, gives the generator's labels."""
    x, y = agreement_data(distance, 64, seed=distance)
    assert x.shape == (64, distance + 2, len(VOCABULARY))
    assert np.all(x.sum(-1) == 1)  # one-hot
    words, numbers = read(x)
    for sentence, label in zip(words, y, strict=True):
        subject = sentence[0]
        assert subject in {"cat", "cats", "dog", "dogs"} and sentence[-1] == ","
        assert label == (subject in PLURAL)
        assert subject.endswith("s") == bool(label)  # "cats" / "dogs" are plural
    clause = numbers[:, 1:-1]
    assert np.all((clause >= 0).any(1))  # every clause has a noun
    if distance > 1:  # ... of both numbers: an agreement attractor, whatever the subject
        assert np.all((clause == 0).any(1) & (clause == 1).any(1))
    assert 0.3 < y.mean() < 0.7


def test_the_clause_does_not_give_the_label_away():
    """Subject nouns recur in the clause; the last noun, the majority of nouns and the
    frequency of every word in the clause are independent of the label."""
    x, y = agreement_data(50, 2048, seed=1)
    words, numbers = read(x)
    clause_words, clause = words[:, 1:-1], numbers[:, 1:-1]
    assert np.isin(clause_words, ["cat", "cats", "dog", "dogs"]).any(1).mean() > 0.5
    last_noun = np.array([row[row >= 0][-1] for row in clause])
    assert 0.45 < np.mean(last_noun == y) < 0.55
    majority = (clause == 1).sum(1) > (clause == 0).sum(1)
    assert 0.45 < np.mean(majority == y) < 0.55
    for word in VOCABULARY:
        share = [np.mean(clause_words[y == label] == word) for label in (0, 1)]
        assert abs(share[0] - share[1]) < 0.01, word


def test_same_seed_same_sentences_and_bad_arguments():
    a, b, c = (agreement_data(5, 8, seed=s) for s in (3, 3, 4))
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="`distance`"):
            agreement_data(bad, 8, seed=0)
    with pytest.raises(ValueError, match="`size`"):
        agreement_data(5, 0, seed=0)


# ------------------------------------------------------------------------------ every task
@pytest.mark.parametrize("name", sorted(TASKS))
def test_same_seed_same_data_other_seed_other_data(name):
    task = TASKS[name]
    a, b, c = (task.data(6, 8, seed=s) for s in ([1, 6, 0, 0], [1, 6, 0, 0], [1, 6, 1, 0]))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("name", sorted(TASKS))
def test_bad_length_or_size_names_the_argument(name):
    task = TASKS[name]
    for bad in (task.min_length - 1, -3, 2.5, True, "5"):
        with pytest.raises(ValueError, match=r"`(length|distance)`"):
            task.data(bad, 4, seed=0)
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="`size`"):
            task.data(task.min_length + 1, bad, seed=0)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_solved_threshold_is_on_the_right_side_of_the_baseline(name):
    task = TASKS[name]
    chance = task.chance(50)
    assert not task.solved(chance)
    better = chance / 100 if task.lower_is_better else 1.0
    assert task.solved(better)
