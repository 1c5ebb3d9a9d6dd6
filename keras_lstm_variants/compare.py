"""``keras-lstm-variants compare``: every variant on the long-range subject-verb agreement task.

Each variant of :data:`keras_lstm_variants.VARIANTS`, and a ``keras.layers.SimpleRNN`` baseline
(``simplernn``), reads one-hot sentences of the agreement language of
:mod:`keras_lstm_variants.tasks` and predicts the verb's number from its last state::

    Input(None, vocabulary) -> recurrent layer(units) -> Dense(1, sigmoid)

Every model trains on the same sentences, an equal number at each distance, in batches of one
distance each (so no padding), with the same seed and optimizer (Adam at Keras's default
learning rate). After each epoch it is scored on held-out sentences at each distance. Under
``--out`` it writes:

* ``results.md`` / ``results.json``: variant x distance -> held-out accuracy after the last
  epoch, parameters, seconds per epoch, and the first epoch with accuracy >= 95% at every
  distance (also printed; the JSON adds every epoch's accuracies);
* ``accuracy_vs_distance.png``: accuracy against distance, and at the longest distance against
  epoch (needs matplotlib, the ``examples`` extra);
* ``tensorboard/<variant>/``: Keras's TensorBoard logs (``train``), the held-out accuracies
  (``held_out``: per epoch; ``test``: by distance), and GateStatistics (``gates``) of every
  variant;
* ``saved_models/<variant>/``: each trained model, exported with ``export_saved_model``.
"""

import json
import os
import time

import keras
import numpy as np
import tensorflow as tf

from . import VARIANTS
from .cli import UsageError
from .export import export_saved_model
from .gates import GateStatistics
from .tasks import VOCABULARY, agreement_data

#: Name of the keras.layers.SimpleRNN baseline on the command line.
BASELINE = "simplernn"
DEFAULT_DISTANCES = (5, 20, 50, 100, 200, 500)
#: Settings of the default run and of ``--quick`` (command-line options override them).
PRESETS = {
    "default": {"distances": DEFAULT_DISTANCES, "epochs": 8, "units": 32, "batches": 8},
    "quick": {"distances": (5, 20), "epochs": 2, "units": 8, "batches": 2},
}
BATCH_SIZE = 32
TEST_SIZE = 256
LEARNING_RATE = 0.001
#: A model has learned the task once its held-out accuracy is this or more at every distance.
LEARNED = 0.95
#: XLA compiles one program per sentence length: minutes under load, for little gain here.
JIT_COMPILE = False
#: Longest distance accepted: one sentence is distance + 2 time steps.
MAX_DISTANCE = 10_000


def variant_names():
    """The names ``--variants`` accepts, in table order: the variants, then the baseline."""
    return (*VARIANTS, BASELINE)


def configure(parser):
    parser.add_argument(
        "--variants",
        default=",".join(variant_names()),
        help="comma-separated, from: %(default)s (default: all)",
    )
    parser.add_argument(
        "--distances",
        help="comma-separated distractor distances, integers >= 1 "
        f"(default: {','.join(map(str, DEFAULT_DISTANCES))}; --quick: 5,20)",
    )
    parser.add_argument("--epochs", type=int, help="training epochs (default: 8; --quick: 2)")
    parser.add_argument(
        "--units", type=int, help="units of each recurrent layer (default: 32; --quick: 8)"
    )
    parser.add_argument(
        "--out", default="compare-out", help="output directory (default: %(default)s)"
    )
    parser.add_argument("--quick", action="store_true", help="a small run of about a minute")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")


# ------------------------------------------------------------------------------ arguments
def parse_variants(text):
    known = variant_names()
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise UsageError(
            f"--variants: unknown variant {', '.join(map(repr, unknown)) or '(none given)'}; "
            f"choose from {', '.join(known)}"
        )
    return list(dict.fromkeys(names))


def parse_distances(text):
    try:
        distances = [int(part) for part in text.split(",")]
    except ValueError:
        distances = []
    if not distances or any(not 1 <= d <= MAX_DISTANCE for d in distances):
        raise UsageError(
            f"--distances: expected comma-separated integers from 1 to {MAX_DISTANCE}; "
            f"received {text!r}"
        )
    return sorted(set(distances))


def check_positive(option, value):
    if value < 1:
        raise UsageError(f"{option}: must be a positive integer; received {value}")
    return value


def prepare_out(path):
    """Create ``path`` and prove it writable, before any training."""
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, ".write-test")
        with open(probe, "w") as file:
            file.write("ok")
        os.remove(probe)
    except OSError as error:
        raise UsageError(f"--out: cannot write to {path!r}: {error.strerror or error}") from None
    return path


def require_matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise UsageError(
            "the accuracy plot needs matplotlib, which is not installed; install it with "
            'pip install "keras-lstm-variants[examples]" (or pip install matplotlib)'
        ) from None
    matplotlib.use("Agg")


def settings(args):
    """The validated settings of a run, from the command line over the preset."""
    preset = PRESETS["quick" if args.quick else "default"]
    return {
        "variants": parse_variants(args.variants),
        "distances": (
            parse_distances(args.distances) if args.distances else list(preset["distances"])
        ),
        "epochs": check_positive(
            "--epochs", preset["epochs"] if args.epochs is None else args.epochs
        ),
        "units": check_positive("--units", preset["units"] if args.units is None else args.units),
        "batches": preset["batches"],
        "seed": args.seed,
        "out": prepare_out(args.out),
    }


# ------------------------------------------------------------------------------- training
def build_model(name, units):
    """``Input -> name's recurrent layer(units) -> Dense(1, sigmoid)``, compiled."""
    if name == BASELINE:
        recurrent = keras.layers.SimpleRNN(units, name=name)
    else:
        recurrent = VARIANTS[name][1](units, name=name)
    model = keras.Sequential(
        [
            keras.Input((None, len(VOCABULARY)), name="sentence"),
            recurrent,
            keras.layers.Dense(1, activation="sigmoid", name="plural_verb"),
        ],
        name=name,
    )
    model.compile(
        keras.optimizers.Adam(LEARNING_RATE),
        "binary_crossentropy",
        metrics=["accuracy"],
        jit_compile=JIT_COMPILE,
    )
    return model


def training_batches(distances, batches, seed):
    """``batches`` batches of :data:`BATCH_SIZE` sentences per distance, one distance each."""
    result = []
    for distance in distances:
        x, y = agreement_data(distance, batches * BATCH_SIZE, seed=[seed, distance, 0])
        y = y.astype("float32")[:, None]
        result += [
            (x[i : i + BATCH_SIZE], y[i : i + BATCH_SIZE]) for i in range(0, len(x), BATCH_SIZE)
        ]
    return result


def as_dataset(batches, seed):
    """``batches`` as a ``tf.data`` pipeline, shuffled anew each epoch from ``seed``.

    Built afresh for each model, so every model sees the same batches in the same order.
    """
    rng = np.random.default_rng([seed, 1])

    def shuffled():
        for index in rng.permutation(len(batches)):
            yield batches[index]

    signature = (
        tf.TensorSpec((None, None, len(VOCABULARY)), tf.float32),
        tf.TensorSpec((None, 1), tf.float32),
    )
    dataset = tf.data.Dataset.from_generator(shuffled, output_signature=signature)
    return dataset.apply(tf.data.experimental.assert_cardinality(len(batches)))


class EpochTimer(keras.callbacks.Callback):
    """Records the wall-clock seconds of each training epoch."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def seconds_per_epoch(seconds):
    """The median epoch time, leaving out the first epoch (graph tracing) when there are more."""
    return float(np.median(seconds[1:] if len(seconds) > 1 else seconds))


def held_out(distance, seed):
    """The :data:`TEST_SIZE` held-out sentences at ``distance`` (another seed than training's)."""
    return agreement_data(distance, TEST_SIZE, seed=[seed, distance, 1])


class HeldOutAccuracy(keras.callbacks.Callback):
    """After each epoch, the accuracy on the held-out sentences at each distance.

    Keeps one ``{distance: accuracy}`` per epoch in ``history``, prints it (progress), and
    writes the TensorBoard scalars ``held_out/accuracy_d<distance>`` (step = epoch) to the run
    ``<log_dir>/held_out``; at the end of training, the last epoch's accuracies as
    ``test/accuracy_by_distance`` (step = distance) to the run ``<log_dir>/test``.
    """

    def __init__(self, log_dir, distances, seed):
        super().__init__()
        self.data = {distance: held_out(distance, seed) for distance in distances}
        self.log_dir = log_dir
        self.writer = tf.summary.create_file_writer(os.path.join(log_dir, "held_out"))
        self.history = []

    def set_model(self, model):
        super().set_model(model)
        # One graph for every sentence length (model.predict would retrace for each).
        sentences = tf.TensorSpec((None, None, len(VOCABULARY)), tf.float32)
        self.forward = tf.function(lambda x: model(x, training=False), input_signature=[sentences])

    def on_epoch_end(self, epoch, logs=None):
        accuracy = {}
        for distance, (x, y) in self.data.items():
            predicted = self.forward(x).numpy()[:, 0] > 0.5
            accuracy[distance] = float(np.mean(predicted == y))
        self.history.append(accuracy)
        with self.writer.as_default(step=epoch):
            for distance, value in accuracy.items():
                tf.summary.scalar(f"held_out/accuracy_d{distance}", value)
        self.writer.flush()
        print("  held-out accuracy: " + format_accuracy(accuracy), flush=True)

    def on_train_end(self, logs=None):
        self.writer.close()
        with tf.summary.create_file_writer(os.path.join(self.log_dir, "test")).as_default():
            for distance, value in self.history[-1].items():
                tf.summary.scalar("test/accuracy_by_distance", value, step=distance)

    def learned_at(self):
        """The first epoch (from 1) with accuracy >= :data:`LEARNED` at every distance, or None."""
        for epoch, accuracy in enumerate(self.history, 1):
            if min(accuracy.values()) >= LEARNED:
                return epoch
        return None


def format_accuracy(accuracy):
    return ", ".join(f"d={distance}: {100 * value:.1f}%" for distance, value in accuracy.items())


def probe_batch(distances, seed, size=8):
    """The GateStatistics probe: ``size`` test sentences at the longest distance up to 50."""
    distance = max([d for d in distances if d <= 50] or [min(distances)])
    return agreement_data(distance, size, seed=[seed, distance, 2])[0]


def train_variant(name, config, batches):
    """Train, score, log and export one model; return its row of the results."""
    keras.utils.set_random_seed(config["seed"])
    model = build_model(name, config["units"])
    log_dir = os.path.join(config["out"], "tensorboard", name)
    timer = EpochTimer()
    held_out_accuracy = HeldOutAccuracy(log_dir, config["distances"], config["seed"])
    # The timer comes first: its epoch ends before the other callbacks' work.
    callbacks = [timer, held_out_accuracy, keras.callbacks.TensorBoard(log_dir)]
    if name != BASELINE:  # SimpleRNN has no gates to trace
        callbacks.append(GateStatistics(log_dir, probe_batch(config["distances"], config["seed"])))
    model.fit(
        as_dataset(batches, config["seed"]),
        epochs=config["epochs"],
        callbacks=callbacks,
        shuffle=False,  # as_dataset shuffles
        verbose=2,
    )
    os.makedirs(os.path.join(config["out"], "saved_models"), exist_ok=True)
    export_saved_model(model, os.path.join(config["out"], "saved_models", name))
    return {
        "variant": name,
        "parameters": int(model.count_params()),
        "seconds_per_epoch": seconds_per_epoch(timer.seconds),
        "learned_at_epoch": held_out_accuracy.learned_at(),
        "accuracy": held_out_accuracy.history[-1],
        "history": held_out_accuracy.history,
    }


# -------------------------------------------------------------------------------- results
def format_table(rows, distances):
    """The results as a Markdown table: variant, parameters, s/epoch, the epoch the model
    learned the task at (held-out accuracy >= :data:`LEARNED` at every distance), accuracy at
    each distance after the last epoch."""
    header = ["variant", "parameters", "s/epoch", f"learned (>= {LEARNED:.0%}) at epoch"]
    header += [f"d={d}" for d in distances]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["variant"], f"{row['parameters']:,}", f"{row['seconds_per_epoch']:.2f}"]
        cells.append(str(row["learned_at_epoch"] or "not learned"))
        cells += [f"{100 * row['accuracy'][d]:.1f}%" for d in distances]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows, distances, path):
    """Save a PNG: held-out accuracy against distance after the last epoch (left), and at the
    longest distance after each epoch (right), one line per variant."""
    import matplotlib.pyplot as plt

    figure, (final, learning) = plt.subplots(1, 2, figsize=(12, 4.5))
    longest = max(distances)
    for row in rows:
        final.plot(distances, [row["accuracy"][d] for d in distances], marker="o")
        epochs = range(1, len(row["history"]) + 1)
        learning.plot(epochs, [accuracy[longest] for accuracy in row["history"]], marker="o")
    for axes in (final, learning):
        axes.axhline(0.5, color="grey", linestyle="--", linewidth=1)
        axes.set_ylim(0, 1.05)
        axes.set_ylabel("held-out accuracy of the verb's number")
    final.set_xscale("log")
    final.set_xticks(distances, [str(d) for d in distances])
    final.set_xticks([], minor=True)
    final.set_xlabel("distance: distractor tokens between subject and verb")
    final.set_title("After the last epoch")
    learning.set_xlabel("epoch")
    learning.xaxis.get_major_locator().set_params(integer=True)
    learning.set_title(f"While training, at distance {longest}")
    figure.legend([row["variant"] for row in rows] + ["chance"], loc="center right")
    figure.suptitle("Subject-verb agreement across a distractor clause")
    figure.tight_layout(rect=(0, 0, 0.88, 1))
    figure.savefig(path, dpi=100)
    plt.close(figure)


def run(args):
    config = settings(args)
    require_matplotlib()
    out, distances, names = config["out"], config["distances"], config["variants"]
    print(
        f"compare: {len(names)} models ({', '.join(names)}), distances {distances}, "
        f"{config['epochs']} epochs of {config['batches'] * len(distances)} batches, "
        f"{config['units']} units, seed {config['seed']}; writing to {out}",
        flush=True,
    )
    begin = time.perf_counter()
    batches = training_batches(distances, config["batches"], config["seed"])
    rows = []
    for number, name in enumerate(names, 1):
        print(f"[{number}/{len(names)}] {name}", flush=True)
        start = time.perf_counter()
        rows.append(train_variant(name, config, batches))
        seconds = time.perf_counter() - start
        print(f"[{number}/{len(names)}] {name} done in {seconds:.0f} s", flush=True)
    table = format_table(rows, distances)
    with open(os.path.join(out, "results.md"), "w") as file:
        file.write(table + "\n")
    with open(os.path.join(out, "results.json"), "w") as file:
        json.dump({"settings": config, "results": rows}, file, indent=2)
    plot(rows, distances, os.path.join(out, "accuracy_vs_distance.png"))
    print(f"\n{table}\n")
    print(f"plot: {os.path.join(out, 'accuracy_vs_distance.png')}")
    print(f"models: {os.path.join(out, 'saved_models')}/<variant>")
    print(f"TensorBoard: tensorboard --logdir {os.path.join(out, 'tensorboard')}")
    print(f"compare: done in {time.perf_counter() - begin:.0f} s")
    return 0
