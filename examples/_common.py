"""What the examples share: the command line, seeding, training and the result table.

Each example is a script (``python examples/NAME.py [--quick]``) that trains every selected
variant of :data:`keras_lstm_variants.VARIANTS` the same way and prints one Markdown table,
one row per model, which tests/test_examples.py reads back.
"""

import argparse
import math
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras

import keras_lstm_variants as klv

#: The variants an example trains unless ``--variants`` says otherwise: the four of the LSTM
#: literature's introduction, whose measured tables docs/examples.md reports.
DEFAULT_VARIANTS = ("lstm", "peephole", "cifg", "gru")


def variant_list(text):
    """argparse type: a comma-separated list of variant names from ``klv.VARIANTS``."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in klv.VARIANTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown variant(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(klv.VARIANTS)}"
        )
    return names


def positive_int(text):
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def make_parser(description, epochs, units, batch_size=32):
    """The arguments every example takes; ``--quick`` selects the small mode a test runs.

    Bad input ends the script through ``parser.error``: one message naming the argument, exit
    code 2, no traceback.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--variants",
        type=variant_list,
        default=list(DEFAULT_VARIANTS),
        help=f"comma-separated, from {','.join(klv.VARIANTS)} "
        f"(default: {','.join(DEFAULT_VARIANTS)})",
    )
    parser.add_argument("--epochs", type=positive_int, default=epochs, help="maximum epochs")
    parser.add_argument("--units", type=positive_int, default=units, help="recurrent units")
    parser.add_argument("--batch-size", type=positive_int, default=batch_size)
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and data order")
    parser.add_argument("--quick", action="store_true", help="a small, fast run (for tests)")
    return parser


def recurrent_layer(name, units, **kwargs):
    """The sequence layer of variant ``name`` (``klv.VARIANTS[name][1]``)."""
    return klv.VARIANTS[name][1](units, **kwargs)


def train(args, name, build, x, y, validation_data, sample_weight=None, patience=5):
    """Build variant ``name`` with ``build(name)`` and train it; every variant goes through here.

    All variants get the same seed (initial weights and data order), Adam, loss, epochs, batch
    size, and early stopping that keeps the weights of the best validation-loss epoch.

    Returns:
        ``(model, epochs_run, seconds)``.
    """
    keras.utils.set_random_seed(args.seed)
    model = build(name)
    stop = keras.callbacks.EarlyStopping(patience=patience, restore_best_weights=True)
    start = time.perf_counter()
    history = model.fit(
        x,
        y,
        sample_weight=sample_weight,
        validation_data=validation_data,
        epochs=args.epochs,
        batch_size=args.batch_size,
        callbacks=[stop],
        verbose=0,
    )
    return model, len(history.history["loss"]), time.perf_counter() - start


def compare(args, build, data, evaluate, title, metrics, baselines=(), label="{}", **fit_options):
    """Train every selected variant and print one table row per model.

    Args:
        build: ``build(name)`` returns a compiled model of variant ``name``.
        data: ``(x, y, validation_data)`` or ``(x, y, validation_data, sample_weight)``.
        evaluate: ``evaluate(model)`` returns the ``metrics`` of a trained model.
        baselines: ``(label, *metrics)`` rows of reference models, printed first.
        label: how a variant's row is named (``"Bidirectional({})"``).
        fit_options: passed to :func:`train` (``patience``).
    """
    rows = [(*row, 0, "-") for row in baselines]
    for name in args.variants:
        model, epochs, seconds = train(args, name, build, *data, **fit_options)
        print(f"{label.format(name)}: {epochs} epochs in {seconds:.0f} s", flush=True)
        rows.append((label.format(name), *evaluate(model), model.count_params(), epochs))
    print_table(title, ("model", *metrics, "params", "epochs"), rows)
    return 0


def print_table(title, headers, rows):
    """Print ``rows`` as a Markdown table under ``title``; floats get 4 significant digits."""

    def cell(value):
        if isinstance(value, float):
            return "nan" if math.isnan(value) else f"{value:.4g}"
        return str(value)

    print(f"\n{title}\n")
    print("| " + " | ".join(headers) + " |")
    print("|" + "|".join("---" for _ in headers) + "|")
    for row in rows:
        print("| " + " | ".join(cell(value) for value in row) + " |")
