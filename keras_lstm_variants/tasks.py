"""The long-range dependency task of ``keras-lstm-variants compare``: subject-verb agreement.

A synthetic language after Linzen, Dupoux & Goldberg 2016, "Assessing the Ability of LSTMs to
Learn Syntax-Sensitive Dependencies": "The cat, which chased the dogs ..., was tired" against
"The cats, which chased the dog ..., were tired". Each sentence is

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

>>> from keras_lstm_variants.tasks import agreement_data, decode
>>> x, y = agreement_data(distance=5, size=2, seed=0)
>>> x.shape, y.shape                      # (sentences, distance + 2 tokens, vocabulary), labels
((2, 7, 19), (2,))
>>> len(decode(x[0]))
7
"""

import collections
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
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
        raise ValueError(f"Argument `size` must be an integer >= 1; received {size!r}.")
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


#: A task of ``compare``: ``data(distance, size, seed) -> (x, y)``, with ``x`` one-hot
#: ``(size, time, features)`` and ``y`` binary labels ``(size,)``; ``features`` is ``x``'s last
#: dimension.
Task = collections.namedtuple("Task", ["data", "features", "description"])

#: The tasks ``compare --task`` accepts, by name.
TASKS = {
    "agreement": Task(
        agreement_data, len(VOCABULARY), "Subject-verb agreement across a distractor clause"
    ),
}
