"""Classify the speaker of a Japanese vowel with Bidirectional variants over masked sequences.

Data: JapaneseVowels (Kudo, Toyama & Shimbo 1999) as shipped in sktime
(``sktime.datasets.load_japanese_vowels``, no download): nine male speakers utter /ae/; each
utterance is 7-29 frames of 12 LPC cepstrum coefficients. The official split is used: 270
utterances train (15 % of them validate, for early stopping), 370 test.

Utterances are zero-padded at the end to the longest one, and a ``keras.layers.Masking``
layer tells the Bidirectional layer the true lengths, so the backward direction starts at each
utterance's last real frame, not at the padding. Printed: test accuracy per variant, and
chance (the most frequent test class).

    python examples/classify_vowels.py            # full run
    python examples/classify_vowels.py --quick    # a few epochs (what the test runs)
"""

import _common
import keras
import numpy as np
from sktime.datasets import load_japanese_vowels


def load(split):
    """Padded utterances ``(n, 29, 12)`` (zeros after each end), lengths and labels 0-8."""
    frame, labels = load_japanese_vowels(split=split, return_type="nested_univ")
    utterances = [
        np.stack([np.asarray(frame.iloc[row, col], "float32") for col in range(frame.shape[1])], 1)
        for row in range(len(frame))
    ]
    lengths = np.array([len(u) for u in utterances])
    x = np.zeros((len(utterances), 29, frame.shape[1]), "float32")
    for row, utterance in enumerate(utterances):
        x[row, : len(utterance)] = utterance
    return x, lengths, labels.astype(int) - 1


def standardize(x, lengths, mean, std):
    """``(x - mean) / std`` on the real frames; padding stays exactly zero (the mask value)."""
    real = np.arange(x.shape[1])[None, :] < lengths[:, None]
    return np.where(real[..., None], (x - mean) / std, 0.0).astype("float32")


def main():
    parser = _common.make_parser(__doc__.split("\n")[0], epochs=80, units=32, batch_size=16)
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.units = 3, 8

    x, lengths, y = load("train")
    x_test, lengths_test, y_test = load("test")
    order = np.random.default_rng(args.seed).permutation(len(x))
    x, lengths, y = x[order], lengths[order], y[order]
    frames = np.concatenate([u[:n] for u, n in zip(x, lengths, strict=True)])
    mean, std = frames.mean(0), frames.std(0)
    x = standardize(x, lengths, mean, std)
    x_test = standardize(x_test, lengths_test, mean, std)
    n_fit = int(len(x) * 0.85)

    def build(name):
        model = keras.Sequential(
            [
                keras.Input(x.shape[1:]),
                keras.layers.Masking(0.0),
                keras.layers.Bidirectional(_common.recurrent_layer(name, args.units)),
                keras.layers.Dense(9, activation="softmax"),
            ]
        )
        model.compile(
            keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"]
        )
        return model

    def evaluate(model):
        return (float(np.mean(np.argmax(model.predict(x_test, verbose=0), -1) == y_test)),)

    chance = float(np.bincount(y_test).max() / len(y_test))
    return _common.compare(
        args,
        build,
        (x[:n_fit], y[:n_fit], (x[n_fit:], y[n_fit:])),
        evaluate,
        f"JapaneseVowels speaker, test accuracy ({len(x_test)} utterances, lengths "
        f"{lengths_test.min()}-{lengths_test.max()})",
        ("accuracy",),
        baselines=[("chance (majority class)", chance)],
        label="Bidirectional({})",
        patience=10,
    )


if __name__ == "__main__":
    raise SystemExit(main())
