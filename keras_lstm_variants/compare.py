"""``keras-lstm-variants compare``: every variant on a long-range task, over several seeds.

Each variant of :data:`keras_lstm_variants.VARIANTS`, and a ``keras.layers.SimpleRNN`` baseline
(``simplernn``), reads the one-hot sentences of a task of :data:`keras_lstm_variants.tasks.TASKS`
(``--task``; by default the subject-verb agreement language) and predicts the binary label from
its last state::

    Input(None, features) -> recurrent layer(units) -> Dense(1, sigmoid)

Every model trains on the same sentences, an equal number at each distance, in batches of one
distance each (so no padding), with the same optimizer (Adam, ``--learning-rate``). After each
epoch it is scored on held-out sentences at each distance. Whether a small recurrent network
finds the long-range solution at all depends on its random start, so each model trains from
``--seeds`` seeds (``--seed``, ``--seed`` + 1, ...; the seed draws the initial weights, the
training and the held-out sentences), and the results are the median over seeds and the number
of seeds in which the model learned the task. Under ``--out`` it writes:

* ``results.md`` / ``results.json``: variant x distance -> median held-out accuracy after the
  last epoch, parameters, seconds per epoch, and in how many seeds the model reached >= 95% at
  every distance (also printed; the JSON adds each seed's accuracies after every epoch);
* ``accuracy_vs_distance.png``: median accuracy (min-max band over seeds) against distance,
  and at the longest distance against epoch (needs matplotlib, the ``examples`` extra);
* ``tensorboard/<variant>/``, first seed only: Keras's TensorBoard logs (``train``), the
  held-out accuracies (``held_out``: per epoch; ``test``: by distance), and GateStatistics
  (``gates``) of every variant;
* ``saved_models/<variant>/``, first seed only: the trained model, exported with
  ``export_saved_model``.
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
from .tasks import TASKS

#: Name of the keras.layers.SimpleRNN baseline on the command line.
BASELINE = "simplernn"
DEFAULT_DISTANCES = (5, 20, 50, 100, 200, 500)
#: Settings of the default run and of ``--quick`` (command-line options override them).
PRESETS = {
    "default": {"distances": DEFAULT_DISTANCES, "epochs": 8, "units": 32, "batches": 8, "seeds": 3},
    "quick": {"distances": (5, 20), "epochs": 2, "units": 8, "batches": 2, "seeds": 1},
}
BATCH_SIZE = 32
TEST_SIZE = 256
#: Adam's learning rate, chosen by measurement (see README, "The main job: compare").
LEARNING_RATE = 0.01
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
    parser.add_argument(
        "--seeds", type=int, help="train each model from this many seeds (default: 3; --quick: 1)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="first random seed (default: %(default)s)"
    )
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=LEARNING_RATE,
        help="Adam's learning rate (default: %(default)s)",
    )
    parser.add_argument(
        "--task", default="agreement", help=f"one of: {', '.join(TASKS)} (default: %(default)s)"
    )


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


def check_task(name):
    if name not in TASKS:
        raise UsageError(f"--task: unknown task {name!r}; choose from {', '.join(TASKS)}")
    return name


def check_learning_rate(value):
    if not 0 < value < 1:  # also rejects nan
        raise UsageError(f"--learning-rate: must be between 0 and 1; received {value}")
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
    seeds = check_positive("--seeds", preset["seeds"] if args.seeds is None else args.seeds)
    return {
        "task": check_task(args.task),
        "variants": parse_variants(args.variants),
        "distances": (
            parse_distances(args.distances) if args.distances else list(preset["distances"])
        ),
        "epochs": check_positive(
            "--epochs", preset["epochs"] if args.epochs is None else args.epochs
        ),
        "units": check_positive("--units", preset["units"] if args.units is None else args.units),
        "batches": preset["batches"],
        "seeds": list(range(args.seed, args.seed + seeds)),
        "learning_rate": check_learning_rate(args.learning_rate),
        "out": prepare_out(args.out),
    }


# ------------------------------------------------------------------------------- training
def build_model(name, units, features, learning_rate=LEARNING_RATE):
    """``Input(features) -> name's recurrent layer(units) -> Dense(1, sigmoid)``, compiled."""
    if name == BASELINE:
        recurrent = keras.layers.SimpleRNN(units, name=name)
    else:
        recurrent = VARIANTS[name][1](units, name=name)
    model = keras.Sequential(
        [
            keras.Input((None, features), name="sentence"),
            recurrent,
            keras.layers.Dense(1, activation="sigmoid", name="plural_verb"),
        ],
        name=name,
    )
    model.compile(
        keras.optimizers.Adam(learning_rate),
        "binary_crossentropy",
        metrics=["accuracy"],
        jit_compile=JIT_COMPILE,
    )
    return model


def training_batches(task, distances, batches, seed):
    """``batches`` batches of :data:`BATCH_SIZE` sentences of ``task`` per distance, one
    distance each."""
    result = []
    for distance in distances:
        x, y = task.data(distance, batches * BATCH_SIZE, seed=[seed, distance, 0])
        y = y.astype("float32")[:, None]
        result += [
            (x[i : i + BATCH_SIZE], y[i : i + BATCH_SIZE]) for i in range(0, len(x), BATCH_SIZE)
        ]
    return result


def as_dataset(batches, seed, features):
    """``batches`` as a ``tf.data`` pipeline, shuffled anew each epoch from ``seed``.

    Built afresh for each model, so every model sees the same batches in the same order.
    """
    rng = np.random.default_rng([seed, 1])

    def shuffled():
        for index in rng.permutation(len(batches)):
            yield batches[index]

    signature = (
        tf.TensorSpec((None, None, features), tf.float32),
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


def held_out(task, distance, seed):
    """The :data:`TEST_SIZE` held-out sentences of ``task`` at ``distance`` (another seed than
    training's)."""
    return task.data(distance, TEST_SIZE, seed=[seed, distance, 1])


class HeldOutAccuracy(keras.callbacks.Callback):
    """After each epoch, the accuracy on the held-out sentences at each distance.

    Keeps one ``{distance: accuracy}`` per epoch in ``history`` and prints it (progress). With
    a ``log_dir``, it writes the TensorBoard scalars ``held_out/accuracy_d<distance>``
    (step = epoch) to the run ``<log_dir>/held_out``; at the end of training, the last epoch's
    accuracies as ``test/accuracy_by_distance`` (step = distance) to the run ``<log_dir>/test``.
    """

    def __init__(self, task, distances, seed, log_dir=None):
        super().__init__()
        self.data = {distance: held_out(task, distance, seed) for distance in distances}
        self.features = task.features
        self.log_dir = log_dir
        self.writer = log_dir and tf.summary.create_file_writer(os.path.join(log_dir, "held_out"))
        self.history = []

    def set_model(self, model):
        super().set_model(model)
        # One graph for every sentence length (model.predict would retrace for each).
        sentences = tf.TensorSpec((None, None, self.features), tf.float32)
        self.forward = tf.function(lambda x: model(x, training=False), input_signature=[sentences])

    def on_epoch_end(self, epoch, logs=None):
        accuracy = {}
        for distance, (x, y) in self.data.items():
            predicted = self.forward(x).numpy()[:, 0] > 0.5
            accuracy[distance] = float(np.mean(predicted == y))
        self.history.append(accuracy)
        print("  held-out accuracy: " + format_accuracy(accuracy), flush=True)
        if not self.writer:
            return
        with self.writer.as_default(step=epoch):
            for distance, value in accuracy.items():
                tf.summary.scalar(f"held_out/accuracy_d{distance}", value)
        self.writer.flush()

    def on_train_end(self, logs=None):
        if not self.writer:
            return
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


def probe_batch(task, distances, seed, size=8):
    """The GateStatistics probe: ``size`` test sentences at the longest distance up to 50."""
    distance = max([d for d in distances if d <= 50] or [min(distances)])
    return task.data(distance, size, seed=[seed, distance, 2])[0]


def train_variant(name, config, seed, batches, log=False):
    """Train and score one model from ``seed``; with ``log``, also write its TensorBoard logs
    and GateStatistics and export it. Returns this seed's results."""
    task, out, distances = TASKS[config["task"]], config["out"], config["distances"]
    keras.utils.set_random_seed(seed)
    model = build_model(name, config["units"], task.features, config["learning_rate"])
    log_dir = os.path.join(out, "tensorboard", name) if log else None
    timer = EpochTimer()
    held_out_accuracy = HeldOutAccuracy(task, distances, seed, log_dir)
    # The timer comes first: its epoch ends before the other callbacks' work.
    callbacks = [timer, held_out_accuracy]
    if log:
        callbacks.append(keras.callbacks.TensorBoard(log_dir))
    if log and name != BASELINE:  # SimpleRNN has no gates to trace
        callbacks.append(GateStatistics(log_dir, probe_batch(task, distances, seed)))
    model.fit(
        as_dataset(batches, seed, task.features),
        epochs=config["epochs"],
        callbacks=callbacks,
        shuffle=False,  # as_dataset shuffles
        verbose=2,
    )
    if log:
        os.makedirs(os.path.join(out, "saved_models"), exist_ok=True)
        export_saved_model(model, os.path.join(out, "saved_models", name))
    return {
        "seed": seed,
        "parameters": int(model.count_params()),
        "seconds_per_epoch": seconds_per_epoch(timer.seconds),
        "learned_at_epoch": held_out_accuracy.learned_at(),
        "accuracy": held_out_accuracy.history[-1],
        "history": held_out_accuracy.history,
    }


def summarize(name, runs, distances):
    """One variant's row of the results from its runs (one per seed): the median, min and max
    held-out accuracy at each distance after the last epoch, the median seconds per epoch, and
    the number of seeds in which it learned the task."""
    accuracy = np.array([[run["accuracy"][d] for d in distances] for run in runs])
    return {
        "variant": name,
        "parameters": runs[0]["parameters"],
        "seconds_per_epoch": float(np.median([run["seconds_per_epoch"] for run in runs])),
        "learned": sum(run["learned_at_epoch"] is not None for run in runs),
        "seeds": len(runs),
        "accuracy": dict(zip(distances, np.median(accuracy, 0).tolist())),
        "min": dict(zip(distances, accuracy.min(0).tolist())),
        "max": dict(zip(distances, accuracy.max(0).tolist())),
        "runs": runs,
    }


# -------------------------------------------------------------------------------- results
def format_table(rows, distances):
    """The results as a Markdown table: variant, parameters, s/epoch, in how many seeds the
    model learned the task (held-out accuracy >= :data:`LEARNED` at every distance), and the
    median accuracy over seeds at each distance after the last epoch."""
    header = ["variant", "parameters", "s/epoch", f"learned (>= {LEARNED:.0%}) in seeds"]
    header += [f"d={d}" for d in distances]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["variant"], f"{row['parameters']:,}", f"{row['seconds_per_epoch']:.2f}"]
        cells.append(f"{row['learned']}/{row['seeds']}")
        cells += [f"{100 * row['accuracy'][d]:.1f}%" for d in distances]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows, distances, path, title):
    """Save a PNG, one colour per variant: held-out accuracy against distance after the last
    epoch (left), and at the longest distance after each epoch (right); each line is the
    median over seeds, its band spans the lowest to the highest seed."""
    import matplotlib.pyplot as plt

    figure, (final, learning) = plt.subplots(1, 2, figsize=(12, 4.5))
    longest = max(distances)
    handles = []
    for row in rows:
        handles += final.plot(distances, [row["accuracy"][d] for d in distances], marker="o")
        colour = handles[-1].get_color()
        low, high = ([row[key][d] for d in distances] for key in ("min", "max"))
        final.fill_between(distances, low, high, color=colour, alpha=0.15, linewidth=0)
        curves = np.array([[a[longest] for a in run["history"]] for run in row["runs"]])
        epochs = np.arange(1, curves.shape[1] + 1)
        learning.plot(epochs, np.median(curves, 0), marker="o", color=colour)
        learning.fill_between(
            epochs, curves.min(0), curves.max(0), color=colour, alpha=0.15, linewidth=0
        )
    for axes in (final, learning):
        chance = axes.axhline(0.5, color="grey", linestyle="--", linewidth=1)
        axes.set_ylim(0, 1.05)
        axes.set_ylabel("held-out accuracy")
    final.set_xscale("log")
    final.set_xticks(distances, [str(d) for d in distances])
    final.set_xticks([], minor=True)
    final.set_xlabel("distance: distractor tokens between subject and verb")
    final.set_title("After the last epoch")
    learning.set_xlabel("epoch")
    learning.xaxis.get_major_locator().set_params(integer=True)
    learning.set_title(f"While training, at distance {longest}")
    seeds = rows[0]["seeds"]
    labels = [f"{row['variant']} (learned in {row['learned']}/{seeds})" for row in rows]
    figure.legend([*handles, chance], [*labels, "chance"], loc="center right")
    figure.suptitle(f"{title}: median of {seeds} seed{'s' * (seeds > 1)}, band: min to max")
    figure.tight_layout(rect=(0, 0, 0.82, 1))
    figure.savefig(path, dpi=100)
    plt.close(figure)


def run(args):
    config = settings(args)
    require_matplotlib()
    out, distances, names, seeds = (
        config[key] for key in ("out", "distances", "variants", "seeds")
    )
    task = TASKS[config["task"]]
    print(
        f"compare: task {config['task']}, {len(names)} models ({', '.join(names)}), distances "
        f"{distances}, {config['epochs']} epochs of {config['batches'] * len(distances)} "
        f"batches, {config['units']} units, learning rate {config['learning_rate']}, seeds "
        f"{', '.join(map(str, seeds))} (TensorBoard logs and exported models: seed {seeds[0]}); "
        f"writing to {out}",
        flush=True,
    )
    begin = time.perf_counter()
    batches = {seed: training_batches(task, distances, config["batches"], seed) for seed in seeds}
    runs = {name: [] for name in names}
    total = len(names) * len(seeds)
    for number, (seed, name) in enumerate(((s, n) for s in seeds for n in names), 1):
        print(f"[{number}/{total}] {name}, seed {seed}", flush=True)
        start = time.perf_counter()
        runs[name].append(train_variant(name, config, seed, batches[seed], log=seed == seeds[0]))
        seconds = time.perf_counter() - start
        print(f"[{number}/{total}] {name}, seed {seed} done in {seconds:.0f} s", flush=True)
    rows = [summarize(name, runs[name], distances) for name in names]
    table = format_table(rows, distances)
    with open(os.path.join(out, "results.md"), "w") as file:
        file.write(table + "\n")
    with open(os.path.join(out, "results.json"), "w") as file:
        json.dump({"settings": config, "results": rows}, file, indent=2)
    plot(rows, distances, os.path.join(out, "accuracy_vs_distance.png"), task.description)
    print(f"\n{table}\n")
    print(f"plot: {os.path.join(out, 'accuracy_vs_distance.png')}")
    print(f"models (seed {seeds[0]}): {os.path.join(out, 'saved_models')}/<variant>")
    print(f"TensorBoard (seed {seeds[0]}): tensorboard --logdir {os.path.join(out, 'tensorboard')}")
    print(f"compare: done in {time.perf_counter() - begin:.0f} s")
    return 0
