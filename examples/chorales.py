"""Polyphonic music modelling on Bach chorales: negative log-likelihood per time step, per variant.

The setup of Greff et al. 2017, "LSTM: A Search Space Odyssey" (after Boulanger-Lewandowski
et al. 2012): each chorale is a binary piano roll ``x_t`` in {0, 1}^88 (MIDI pitches 21-108)
sampled every quarter note (``--resolution``); the network reads ``x_1 .. x_t`` and gives one
sigmoid probability per note for ``x_{t+1}``. The loss and the reported score are

    NLL = mean over time steps t of  - sum over notes k of
          [x_{t+1,k} log p_{t+1,k} + (1 - x_{t+1,k}) log(1 - p_{t+1,k})]

in nats, averaged over all predicted steps of all test chorales. The baseline "note
frequencies" predicts every step with each note's training frequency (no context).

Data: the chorales bundled with music21 (``music21.corpus.chorales.Iterator``, about 370,
no download). The split is fixed: sorted names, shuffled with seed 0, 70 % train / 15 % valid
(early stopping) / 15 % test. Parsing all of them takes about a minute, so the rolls are cached
in ``--cache`` (one ``.npz``); ``--limit N`` uses only the first N chorales of that order.

    python examples/chorales.py            # full run
    python examples/chorales.py --quick    # 10 chorales, a few epochs (what the test runs)
"""

import argparse
import os
import tempfile
from pathlib import Path

import _common
import keras
import numpy as np
from keras import ops
from music21 import corpus

LOWEST, NOTES = 21, 88  # piano keys A0 .. C8


def piano_roll(name, resolution):
    """Binary roll ``(steps, 88)`` of one chorale: the notes sounding at each sampling time."""
    score = corpus.parse(name)
    steps = int(np.ceil(float(score.highestTime) / resolution))
    roll = np.zeros((steps, NOTES), np.uint8)
    for note in score.flatten().notes:
        start = int(np.ceil(float(note.offset) / resolution))
        stop = int(np.ceil(float(note.offset + note.quarterLength) / resolution))
        for pitch in note.pitches:
            if not LOWEST <= pitch.midi < LOWEST + NOTES:
                raise ValueError(f"{name}: {pitch} is outside the piano's 88 keys")
            roll[start:stop, pitch.midi - LOWEST] = 1
    return roll


def load_rolls(names, resolution, cache_dir):
    """The rolls of ``names``, parsing only those missing from the cache file (then saving it)."""
    path = Path(cache_dir) / f"chorales-{resolution:g}.npz"
    cached = dict(np.load(path)) if path.exists() else {}
    keys = [name.replace("/", "_") for name in names]
    missing = [(name, key) for name, key in zip(names, keys, strict=True) if key not in cached]
    for name, key in missing:
        cached[key] = piano_roll(name, resolution)
    if missing:  # write a temporary file, then rename: readers never see a partial cache
        with tempfile.NamedTemporaryFile(dir=cache_dir, suffix=".npz", delete=False) as file:
            np.savez_compressed(file, **cached)
        os.replace(file.name, path)
    print(f"{len(names)} chorales: {len(missing)} parsed, {len(names) - len(missing)} from {path}")
    return [cached[key] for key in keys]


def split(limit):
    """The fixed (train, valid, test) chorale names: seed-0 order of the sorted corpus."""
    names = sorted(set(corpus.chorales.Iterator(returnType="filename")))
    names = [names[i] for i in np.random.default_rng(0).permutation(len(names))][:limit]
    held_out = max(1, round(0.15 * len(names)))
    return names[2 * held_out :], names[:held_out], names[held_out : 2 * held_out]


def sequences(rolls):
    """Inputs ``x_1..x_{T-1}`` and targets ``x_2..x_T``, zero-padded at the end, and the weight
    of each step (1 real, 0 padding; the networks are causal, so padding never leaks back)."""
    length = max(len(roll) for roll in rolls) - 1
    x = np.zeros((len(rolls), length, NOTES), "float32")
    y = np.zeros_like(x)
    weight = np.zeros((len(rolls), length), "float32")
    for row, roll in enumerate(rolls):
        x[row, : len(roll) - 1], y[row, : len(roll) - 1] = roll[:-1], roll[1:]
        weight[row, : len(roll) - 1] = 1.0
    return x, y, weight


def summed_bce(target, logits):
    """Binary cross-entropy summed over the notes: the NLL of one step (sigmoid outputs)."""
    return ops.sum(ops.binary_crossentropy(target, logits, from_logits=True), axis=-1)


def nll_per_step(logits, target, weight):
    """Mean over real steps of the summed binary cross-entropy, in float64 NumPy."""
    logits = np.asarray(logits, "float64")
    per_step = np.sum(np.logaddexp(0.0, logits) - target * logits, axis=-1)
    return float(np.sum(per_step * weight) / np.sum(weight))


def writable_dir(text):
    """argparse type: a directory that exists or can be created, and can be written."""
    path = Path(text).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as error:
        raise argparse.ArgumentTypeError(f"cannot write to {text!r}: {error.strerror}") from None
    return path


def main():
    parser = _common.make_parser(__doc__.split("\n")[0], epochs=100, units=64, batch_size=16)
    parser.add_argument(
        "--cache",
        type=writable_dir,
        default=Path("~/.cache/keras_lstm_variants").expanduser(),
        help="directory of the parsed piano rolls (default: ~/.cache/keras_lstm_variants)",
    )
    parser.add_argument("--limit", type=_common.positive_int, help="use the first N chorales")
    parser.add_argument(
        "--resolution", type=float, default=1.0, help="sampling step in quarter notes"
    )
    args = parser.parse_args()
    if not args.resolution > 0:
        parser.error(f"argument --resolution must be positive, got {args.resolution}")
    if args.quick:
        args.epochs, args.units, args.limit = 3, 8, min(args.limit or 10, 10)
    if args.limit is not None and args.limit < 3:
        parser.error("argument --limit must be at least 3 (one chorale per split)")

    train, valid, test = (
        sequences(load_rolls(names, args.resolution, args.cache)) for names in split(args.limit)
    )
    frequency = np.clip(np.sum(train[1], (0, 1)) / np.sum(train[2]), 1e-4, 1 - 1e-4)
    log_odds = np.log(frequency / (1 - frequency))
    baseline = nll_per_step(np.broadcast_to(log_odds, test[1].shape), test[1], test[2])

    def build(name):
        model = keras.Sequential(
            [
                keras.Input((None, NOTES)),
                _common.recurrent_layer(name, args.units, return_sequences=True),
                # logits (the sigmoid is inside the loss), starting at the note frequencies
                keras.layers.Dense(NOTES, bias_initializer=keras.initializers.Constant(log_odds)),
            ]
        )
        model.compile(keras.optimizers.Adam(3e-3), summed_bce)
        return model

    def evaluate(model):
        return (nll_per_step(model.predict(test[0], verbose=0), test[1], test[2]),)

    return _common.compare(
        args,
        build,
        (train[0], train[1], valid, train[2]),
        evaluate,
        f"Bach chorales, test NLL per time step in nats ({len(test[0])} chorales, "
        f"{int(test[2].sum())} steps; lower is better)",
        ("NLL",),
        baselines=[("note frequencies", baseline)],
        patience=10,
    )


if __name__ == "__main__":
    raise SystemExit(main())
