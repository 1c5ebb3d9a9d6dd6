"""The long-range dependency tasks of ``keras-lstm-variants compare``, in :data:`TASKS`.

* ``adding`` (:class:`Adding`): the adding problem, Hochreiter & Schmidhuber 1997, experiment 4,
  in the form of Le et al. 2015 and Arjovsky et al. 2016;
* ``copy`` (:class:`Copy`): the copy-memory task of Arjovsky et al. 2016;
* ``agreement`` (:class:`Agreement`): subject-verb agreement in a synthetic language, below.

Each :class:`Task` generates its data at one length ``T`` from a seed and defines the model's
head, its loss, the metric its "solved" test reads, and the trivial predictor's baseline.

>>> from keras_lstm_variants.commands.tasks import TASKS
>>> x, y = TASKS["adding"].data(50, size=4, seed=0)
>>> x.shape, y.shape                      # values and markers; the sum of the marked values
((4, 50, 2), (4, 1))
>>> round(TASKS["copy"].baseline(100), 4)  # 10 log(8) / (T + 20)
0.1733

Subject-verb agreement: a synthetic language after Linzen, Dupoux & Goldberg 2016, "Assessing
the Ability of LSTMs to Learn Syntax-Sensitive Dependencies": "The cat, which chased the
dogs ..., was tired" against "The cats, which chased the dog ..., were tired". Each sentence is

    subject  distractor_1 ... distractor_d  ","

and the label is the number of the verb that follows: 1 (plural, "were") when the subject is
plural, 0 (singular, "was") otherwise. The subject is an animal noun; the ``d`` distractors
(the *distance*) are filler words and nouns -- the subject nouns themselves among them, as in
"the cat that chased the dogs" -- drawn without looking at the label. Every clause of two or
more words holds nouns of both numbers, so it always contains an *agreement attractor* (a noun
of the number opposite to the subject's), and neither "the last noun" nor "the majority of
nouns" predicts the label. Only a network that stores the number of the *first* noun and
keeps it, unchanged by the nouns that follow, across all ``d`` tokens gets it right; chance is
50%.

>>> from keras_lstm_variants.commands.tasks import agreement_data, decode
>>> x, y = agreement_data(distance=5, size=2, seed=0)
>>> x.shape, y.shape                      # (sentences, distance + 2 tokens, vocabulary), labels
((2, 7, 19), (2,))
>>> len(decode(x[0]))
7
"""

import numbers

import numpy as np

#: Subject nouns, (singular, plural).
SUBJECTS = (("cat", "cats"), ("dog", "dogs"))
#: Object nouns, (singular, plural).
OBJECTS = (("toy", "toys"), ("bowl", "bowls"), ("bird", "birds"))
#: The nouns of the distractor clause, (singular, plural): the agreement attractors.
ATTRACTORS = SUBJECTS + OBJECTS
#: Filler words of the distractor clause.
FILLERS = ("which", "chased", "the", "near", "all", "day", "and", "ate")
#: The token the verb follows: the end of the sentence the network reads.
END = ","

VOCABULARY = (
    tuple(word for pair in SUBJECTS for word in pair)
    + tuple(word for pair in OBJECTS for word in pair)
    + FILLERS
    + (END,)
)
INDEX = {word: index for index, word in enumerate(VOCABULARY)}

#: Probability that a distractor token is a noun (of :data:`ATTRACTORS`) rather than a filler.
NOUN_RATE = 0.25


def check_distance(distance):
    """Return ``distance`` as an int >= 1, or raise naming the argument."""
    if isinstance(distance, bool) or not isinstance(distance, numbers.Integral) or distance < 1:
        raise ValueError(f"Argument `distance` must be an integer >= 1; received {distance!r}.")
    return int(distance)


def agreement_tokens(distance, size, seed):
    """``size`` sentences with ``distance`` distractors, as token ids, and their verb numbers.

    Returns ``(tokens, labels)``: int arrays shaped ``(size, distance + 2)`` and ``(size,)``;
    label 1 means a plural subject (verb "were"), 0 a singular one ("was"). Half the sentences
    (rounded) are plural, in random order; the same ``seed`` gives the same sentences.
    """
    distance = check_distance(distance)
    size = check_size(size)
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(size) % 2)
    subjects = np.array([[INDEX[word] for word in pair] for pair in SUBJECTS])
    attractors = np.array([[INDEX[word] for word in pair] for pair in ATTRACTORS])
    fillers = np.array([INDEX[word] for word in FILLERS])

    tokens = np.empty((size, distance + 2), dtype=np.int32)
    tokens[:, 0] = subjects[rng.integers(len(SUBJECTS), size=size), labels]
    # The clause never looks at the label: random fillers and nouns of random number, plus a
    # singular and a plural noun at two random positions (one noun only when distance is 1).
    clause = fillers[rng.integers(len(fillers), size=(size, distance))]
    is_noun = rng.random((size, distance)) < NOUN_RATE
    noun_numbers = rng.integers(2, size=(size, distance))
    positions = np.argsort(rng.random((size, distance)), axis=1)[:, :2]
    rows = np.arange(size)[:, None]
    is_noun[rows, positions] = True
    if distance > 1:
        noun_numbers[rows, positions] = [0, 1]
    nouns = attractors[rng.integers(len(ATTRACTORS), size=(size, distance)), noun_numbers]
    tokens[:, 1:-1] = np.where(is_noun, nouns, clause)
    tokens[:, -1] = INDEX[END]
    return tokens, labels.astype(np.int32)


def one_hot(tokens):
    """Token ids ``(..., time)`` as float32 one-hot vectors ``(..., time, len(VOCABULARY))``."""
    return np.eye(len(VOCABULARY), dtype=np.float32)[tokens]


def agreement_data(distance, size, seed):
    """Network inputs ``(size, distance + 2, len(VOCABULARY))`` one-hot, and labels ``(size,)``."""
    tokens, labels = agreement_tokens(distance, size, seed)
    return one_hot(tokens), labels


def decode(sentence):
    """Words of one sentence, given as token ids ``(time,)`` or one-hot ``(time, vocabulary)``."""
    sentence = np.asarray(sentence)
    ids = sentence.argmax(-1) if sentence.ndim == 2 else sentence
    return [VOCABULARY[i] for i in ids]


# --------------------------------------------------------------------------- adding problem
def adding_data(length, size, seed):
    """``size`` sequences of the adding problem of length ``length``, and their targets.

    Returns ``x`` float32 ``(size, length, 2)``: channel 0 holds values drawn from U[0, 1],
    channel 1 is 1 at exactly two steps (the markers), one drawn uniformly from the first half
    ``[0, length // 2)`` and one from the second half ``[length // 2, length)``, 0 elsewhere;
    and ``y`` float32 ``(size, 1)``: the sum of the two marked values.
    """
    length = check_length(length, 2)
    size = check_size(size)
    rng = np.random.default_rng(seed)
    values = rng.random((size, length), dtype=np.float32)
    half = length // 2
    first = rng.integers(0, half, size=size)
    second = rng.integers(half, length, size=size)
    markers = np.zeros((size, length), dtype=np.float32)
    rows = np.arange(size)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    x = np.stack([values, markers], axis=-1)
    y = (values[rows, first] + values[rows, second])[:, None]
    return x, y.astype(np.float32)


# ----------------------------------------------------------------------------- copy memory
#: Categories of the copy task: 0 is the blank, 1..8 the symbols to remember, 9 the delimiter.
COPY_BLANK, COPY_DELIMITER, COPY_CATEGORIES = 0, 9, 10
COPY_SYMBOLS = 8
#: Number of symbols to remember.
COPY_SPAN = 10


def copy_tokens(length, size, seed):
    """``size`` copy-memory sequences with a gap ``length``, as category ids, and their targets.

    Returns int32 ``(inputs, targets)``, both ``(size, length + 20)``: the inputs are
    ``COPY_SPAN`` (10) symbols drawn uniformly from 1..8, ``length - 1`` blanks (0), the
    delimiter (9) and 10 blanks; the targets are ``length + 10`` blanks, then the 10 symbols.
    """
    length = check_length(length, 1)
    size = check_size(size)
    rng = np.random.default_rng(seed)
    symbols = rng.integers(1, COPY_SYMBOLS + 1, size=(size, COPY_SPAN), dtype=np.int32)
    inputs = np.full((size, length + 2 * COPY_SPAN), COPY_BLANK, dtype=np.int32)
    inputs[:, :COPY_SPAN] = symbols
    inputs[:, length + COPY_SPAN - 1] = COPY_DELIMITER
    targets = np.full_like(inputs, COPY_BLANK)
    targets[:, -COPY_SPAN:] = symbols
    return inputs, targets


def copy_data(length, size, seed):
    """Network inputs, one-hot float32 ``(size, length + 20, 10)``, and the target categories
    int32 ``(size, length + 20)`` of :func:`copy_tokens`."""
    inputs, targets = copy_tokens(length, size, seed)
    return np.eye(COPY_CATEGORIES, dtype=np.float32)[inputs], targets


# ----------------------------------------------------------------------------------- tasks
def check_length(length, minimum):
    """Return ``length`` as an int >= ``minimum``, or raise naming the argument."""
    if isinstance(length, bool) or not isinstance(length, numbers.Integral) or length < minimum:
        raise ValueError(f"Argument `length` must be an integer >= {minimum}; received {length!r}.")
    return int(length)


def check_size(size):
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
        raise ValueError(f"Argument `size` must be an integer >= 1; received {size!r}.")
    return int(size)


def _clipped(probabilities):
    return np.clip(np.asarray(probabilities, dtype=np.float64), 1e-7, 1 - 1e-7)


class Task:
    """A task of ``compare``: its data at one length, the model's head, loss, metric,
    baseline and "solved" test. Subclasses set the attributes and the four methods.

    Attributes:
        name: the ``--task`` name.
        description: one line, for titles.
        length_name: what the length ``T`` of a run is (e.g. "T: sequence length").
        min_length: the shortest length the task is defined for.
        features: size of the input vectors.
        outputs, activation: the ``Dense`` head on the recurrent layer's output.
        per_step: whether the head reads every step (``return_sequences=True``) or the last.
        loss: the Keras loss the model trains on (:meth:`score` computes the same in NumPy).
        metric: name of the figure the "solved" test reads; ``lower_is_better`` its direction.
        threshold: a run has solved the task once its held-out ``metric`` passes this.
    """

    name = description = length_name = loss = metric = None
    min_length, features, outputs, activation, per_step = 1, None, 1, None, False
    threshold, lower_is_better = None, True

    def data(self, length, size, seed):
        """``(x, y)``: ``size`` inputs at ``length`` and the targets the model fits."""
        raise NotImplementedError

    def predictions(self, y):
        """The trivial predictor's output for targets ``y`` (it ignores the input)."""
        raise NotImplementedError

    def baseline(self, length):
        """The expected loss of :meth:`predictions`, computed analytically."""
        raise NotImplementedError

    def score(self, predicted, y):
        """``(loss, metric)`` of the model's outputs ``predicted`` for targets ``y``, in NumPy."""
        raise NotImplementedError

    def solved(self, metric):
        """Whether a held-out ``metric`` passes :attr:`threshold`."""
        if self.lower_is_better:
            return bool(metric < self.threshold)
        return bool(metric >= self.threshold)

    def chance(self, length):
        """The trivial predictor's ``metric`` (for the table's baseline row)."""
        return self.baseline(length)


class Adding(Task):
    """The adding problem: Hochreiter & Schmidhuber 1997, "Long Short-Term Memory",
    experiment 4, in the form of Le, Jaitly & Hinton 2015 ("A Simple Way to Initialize
    Recurrent Networks of Rectified Linear Units") and Arjovsky, Shah & Bengio 2016 ("Unitary
    Evolution Recurrent Neural Networks", section 4.2).

    Two input channels of length ``T``: values from U[0, 1], and markers, 1 at one step of the
    first half and one of the second half. The target is the sum of the two marked values,
    read from the last state (``Dense(1)``, mean squared error). Predicting 1 whatever the
    input has MSE Var(X1 + X2) = 2/12 = 1/6 ~ 0.167.

    Solved: held-out MSE < 0.01. A model that carries only the value marked in the second half
    (the short dependency) and guesses the mean 0.5 for the first has MSE Var(X1) = 1/12 ~ 0.083;
    below 0.01 (6% of the trivial MSE) it must have carried the first value across at least
    ``T/2`` steps.
    """

    name, description = "adding", "Adding problem (Hochreiter & Schmidhuber 1997, exp. 4)"
    length_name = "T: sequence length"
    min_length, features, outputs, activation, per_step = 2, 2, 1, None, False
    loss, metric, threshold, lower_is_better = "mse", "MSE", 0.01, True

    def data(self, length, size, seed):
        return adding_data(length, size, seed)

    def predictions(self, y):
        return np.ones(np.shape(y), dtype=np.float32)

    def baseline(self, length):
        return 1 / 6

    def score(self, predicted, y):
        error = np.asarray(predicted, np.float64).reshape(np.shape(y)) - y
        mse = float(np.mean(error**2))
        return mse, mse


class Copy(Task):
    """The copy-memory task of Arjovsky, Shah & Bengio 2016 ("Unitary Evolution Recurrent
    Neural Networks", section 4.1), after Hochreiter & Schmidhuber 1997, experiment 2.

    Ten categories: 0 blank, 1..8 symbols, 9 delimiter, one-hot. The input is 10 symbols drawn
    from 1..8, ``T - 1`` blanks, the delimiter and 10 blanks (``T + 20`` steps); the target is
    ``T + 10`` blanks and then the 10 symbols in order. The model predicts a category at every
    step (``Dense(10, softmax)``), trained on the mean cross-entropy over all steps. The
    memoryless strategy -- blanks, then a uniform guess over the 8 symbols -- has cross-entropy
    ``10 log(8) / (T + 20)`` and recalls 1/8 of the symbols.

    Solved: at least 99% of the held-out recalled symbols (the last 10 steps) right.
    """

    name, description = "copy", "Copy memory (Arjovsky et al. 2016)"
    length_name = "T: blank steps between the symbols and the delimiter"
    min_length, features, outputs, activation, per_step = 1, COPY_CATEGORIES, 10, "softmax", True
    loss, metric, threshold, lower_is_better = (
        "sparse_categorical_crossentropy",
        "recall accuracy",
        0.99,
        False,
    )

    def data(self, length, size, seed):
        return copy_data(length, size, seed)

    def predictions(self, y):
        predicted = np.zeros((*np.shape(y), COPY_CATEGORIES), dtype=np.float32)
        predicted[:, :-COPY_SPAN, COPY_BLANK] = 1.0
        predicted[:, -COPY_SPAN:, 1 : COPY_SYMBOLS + 1] = 1.0 / COPY_SYMBOLS
        return predicted

    def baseline(self, length):
        return float(COPY_SPAN * np.log(COPY_SYMBOLS) / (length + 2 * COPY_SPAN))

    def chance(self, length):
        return 1.0 / COPY_SYMBOLS

    def score(self, predicted, y):
        probabilities = _clipped(predicted)
        chosen = np.take_along_axis(probabilities, y[..., None], axis=-1)[..., 0]
        loss = float(np.mean(-np.log(chosen)))
        recall = predicted[:, -COPY_SPAN:].argmax(-1) == y[:, -COPY_SPAN:]
        return loss, float(np.mean(recall))


class Agreement(Task):
    """Subject-verb agreement across ``d`` distractor words (the module's docstring): binary,
    read from the last state (``Dense(1, sigmoid)``, binary cross-entropy). A constant 0.5
    has cross-entropy log 2 and 50% accuracy. Solved: held-out accuracy >= 95%."""

    name, description = "agreement", "Subject-verb agreement across a distractor clause"
    length_name = "d: distractor words between subject and verb"
    min_length, features, outputs, activation, per_step = 1, len(VOCABULARY), 1, "sigmoid", False
    loss, metric, threshold, lower_is_better = "binary_crossentropy", "accuracy", 0.95, False

    def data(self, length, size, seed):
        x, labels = agreement_data(length, size, seed)
        return x, labels.astype(np.float32)[:, None]

    def predictions(self, y):
        return np.full(np.shape(y), 0.5, dtype=np.float32)

    def baseline(self, length):
        return float(np.log(2))

    def chance(self, length):
        return 0.5

    def score(self, predicted, y):
        p = _clipped(np.reshape(predicted, np.shape(y)))
        loss = float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))))
        return loss, float(np.mean((p > 0.5) == (y > 0.5)))


#: The tasks ``compare --task`` accepts, by name.
TASKS = {task.name: task for task in (Adding(), Copy(), Agreement())}
