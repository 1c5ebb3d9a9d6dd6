"""Write the golden SavedModels in ``saved_models/``: one tiny streaming model per variant.

Each model is ``keras.Input((None, 3))`` -> variant layer (4 units, return_sequences) ->
``Dense(2)``, with weights drawn from N(0, 0.5^2) by a fixed seed. Next to each SavedModel
``saved_models/<variant>/`` the script records ``saved_models/<variant>.npz``: ``inputs``
(3 sequences of 6 steps) and Keras's ``outputs`` on them. tests/test_export.py loads every
model without this package or Keras and checks that it still reproduces those outputs, both
through ``serving_default`` and step by step through ``step``; and that the seeds still rebuild
the same models. Run it again only to change the golden set on purpose:

    python examples/make_golden_models.py [--out saved_models] [--variants gru,lstm]

``--variants`` rewrites only those variants' models (a new variant adds its own without
touching the others').

One more golden model, ``token``, is the most common LSTM model in Keras: token ids
``keras.Input((None,), dtype="int32")`` -> ``Embedding(11, 3, mask_zero=True)`` -> LSTM (4
units, return_sequences) -> ``Dense(2)``; its recorded ``inputs`` are token ids padded with 0
on the right, on the left and in the middle (``--variants token`` writes it alone).
"""

import argparse
import os
import shutil

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

import keras_lstm_variants as klv

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "saved_models")
SEED = 20240604
FEATURES, UNITS, BATCH, TIME = 3, 4, 3, 6
#: The token model's name among the golden models, and its vocabulary size (0 pads).
TOKEN, VOCABULARY = "token", 11


def names():
    """Every golden model: one per variant, then the token model."""
    return [*klv.VARIANTS, TOKEN]


def build(variant):
    """The golden model of ``variant`` (or ``TOKEN``) and its recorded inputs, from the fixed
    seed."""
    if variant == TOKEN:
        return build_token()
    rng = np.random.default_rng([SEED, list(klv.VARIANTS).index(variant)])
    layer = klv.VARIANTS[variant][1](UNITS, return_sequences=True, name=variant)
    model = keras.Sequential(
        [keras.Input((None, FEATURES)), layer, keras.layers.Dense(2, name="head")],
        name=f"golden_{variant}",
    )
    model.set_weights([rng.normal(0.0, 0.5, w.shape).astype("float32") for w in model.weights])
    inputs = rng.normal(0.0, 1.0, (BATCH, TIME, FEATURES)).astype("float32")
    return model, inputs


def build_token():
    """The token model and its recorded token ids (padding at the end, start and middle)."""
    rng = np.random.default_rng([SEED, 1000])
    model = keras.Sequential(
        [
            keras.Input((None,), dtype="int32"),
            keras.layers.Embedding(VOCABULARY, FEATURES, mask_zero=True, name="embedding"),
            klv.LSTM(UNITS, return_sequences=True, name="lstm"),
            keras.layers.Dense(2, name="head"),
        ],
        name=f"golden_{TOKEN}",
    )
    model.set_weights([rng.normal(0.0, 0.5, w.shape).astype("float32") for w in model.weights])
    inputs = rng.integers(1, VOCABULARY, (BATCH, TIME)).astype("int32")
    inputs[0, -2:] = 0
    inputs[1, :2] = 0
    inputs[2, 3] = 0
    return model, inputs


def write(variant, out):
    """Export ``variant``'s golden model to ``out/<variant>/`` and record ``out/<variant>.npz``."""
    model, inputs = build(variant)
    path = os.path.join(out, variant)
    shutil.rmtree(path, ignore_errors=True)
    klv.export_saved_model(model, path, streaming=True)
    np.savez(os.path.join(out, f"{variant}.npz"), inputs=inputs, outputs=model(inputs).numpy())
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=ROOT, help="directory to write (default: saved_models/)")
    parser.add_argument(
        "--variants",
        default=",".join(names()),
        help=f"comma-separated variants (or {TOKEN!r}) to write (default: all)",
    )
    args = parser.parse_args(argv)
    variants = [name.strip() for name in args.variants.split(",") if name.strip()]
    unknown = [name for name in variants if name not in names()]
    if unknown or not variants:
        parser.error(f"--variants: choose from {', '.join(names())}; received {args.variants!r}")
    os.makedirs(args.out, exist_ok=True)
    for variant in variants:
        print("wrote", write(variant, args.out))


if __name__ == "__main__":
    main()
