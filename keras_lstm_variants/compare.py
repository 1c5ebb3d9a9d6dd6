"""``keras-lstm-variants compare``: which cells learn a dependency across ``T`` steps.

The literature's claim (Bengio, Simard & Frasconi 1994; Hochreiter & Schmidhuber 1997) is about
*learning* across a long gap: gradient descent through a plain RNN finds dependencies over a
few steps and fails as the gap grows, while gated cells carry the error back. ``compare``
measures that on the classic tasks of :data:`keras_lstm_variants.tasks.TASKS` (``--task``:
``adding``, ``copy``, ``agreement``, or ``all`` one after the other): each model trains at ONE
fixed length ``T`` per run (no shorter sequences mixed in), for each ``T`` of ``--lengths``,
from ``--seeds`` seeds, on fresh batches that are the same for every model::

    Input(None, features) -> recurrent layer "rnn"(units) -> Dense head of the task

Every ``--eval-every`` steps it scores the model on held-out sequences at ``T`` and stops the
run once the task's "solved" test passes (or after ``--steps``). Under ``--out`` it writes,
after every run (so an interrupted run keeps what finished):

* ``results.md`` / ``results.json``: per task, model and ``T``: the median final held-out
  loss and metric over seeds, in how many seeds the model solved the task, the median number
  of training steps it took, ms per training step; the JSON adds every run's learning curve;
* ``compare.png``, at the end: median final loss against ``T`` (band: lowest to highest seed,
  dashed: the trivial predictor), and the learning curves at the longest ``T``;
* ``tensorboard/<task>-T<T>/<model>/``, first seed, where TensorFlow is installed: Keras's
  TensorBoard logs (``train``), the held-out loss and metric (``held_out``) and GateStatistics
  (``gates``); every model's recurrent layer is named ``rnn``, so TensorBoard draws the variants
  on one chart per gate (e.g. ``gates/rnn/forget/right_saturated``);
* ``saved_models/<task>-T<T>/<model>/``, first seed at the longest ``T``, with ``--export``
  (the default on the TensorFlow backend): the trained model, exported with
  ``export_saved_model``.

Nothing here needs TensorFlow but the logs and the exports: batches are NumPy arrays served by
a ``keras.utils.PyDataset``, so ``KERAS_BACKEND=jax compare --no-export`` runs without it.
"""

import argparse
import json
import math
import os
import re
import sys
import time

import keras
import numpy as np

from . import VARIANTS
from .cli import UsageError
from .specs import parse_spec
from .tasks import TASKS

#: Name of the keras.layers.SimpleRNN baseline on the command line.
BASELINE = "simplernn"
#: Every model's recurrent layer has this name, so TensorBoard overlays the variants' gates.
LAYER_NAME = "rnn"
#: The variants of the default run.
DEFAULT_VARIANTS = ("lstm", "peephole", "cifg", "gru", BASELINE)
DEFAULT_TASK = "adding"
#: Held-out sequences scored at every evaluation.
TEST_SIZE = 256
#: Sequences of the GateStatistics probe batch.
PROBE_SIZE = 8
#: Longest length accepted (a run at T holds batches of about T steps).
MAX_LENGTH = 10_000
MAX_SEED = 2**32 - 1
#: XLA compiles one program per length: minutes under load, for little gain here.
JIT_COMPILE = False

#: Settings of each task's presets, chosen by measurement (docs/main-job.md); command-line
#: options override them. ``steps``: the most training steps of a run; a run stops earlier
#: once solved.
QUICK = {"lengths": (5, 10), "steps": 20, "eval_every": 10, "units": 8, "seeds": 1}
FULL = {
    "lengths": (10, 30, 100, 300, 1000),
    "steps": 10_000,
    "eval_every": 250,
    "units": 128,
    "seeds": 3,
}
PRESETS = {
    "adding": {
        "quick": QUICK,
        "default": {"lengths": (10, 30, 100), "steps": 1500, "eval_every": 100, "seeds": 3},
        "full": FULL,
    },
    "copy": {
        "quick": QUICK,
        "default": {"lengths": (5, 10, 20), "steps": 1000, "eval_every": 100, "seeds": 3},
        "full": FULL,
    },
    "agreement": {
        "quick": QUICK,
        "default": {"lengths": (20, 50, 100), "steps": 1000, "eval_every": 100, "seeds": 3},
        "full": FULL,
    },
}
#: Values a preset leaves out.
COMMON = {"batch_size": 32, "learning_rate": 0.01, "units": 32}


def configure(parser):
    parser.add_argument(
        "--task",
        default=DEFAULT_TASK,
        help=f"one of: {', '.join(TASKS)}, or all (one after the other; default: %(default)s)",
    )
    parser.add_argument(
        "--variants",
        default=",".join(DEFAULT_VARIANTS),
        help="comma-separated models: keys of keras_lstm_variants.VARIANTS "
        f"({', '.join(VARIANTS)}), {BASELINE}, spec strings (greff:NIG, lstm+layer_norm), "
        "greff (its nine variants) or all (default: %(default)s)",
    )
    parser.add_argument(
        "--lengths",
        "--distances",
        dest="lengths",
        help="comma-separated lengths T, one run per T (default: the task's preset)",
    )
    parser.add_argument("--steps", type=int, help="most training steps of a run")
    parser.add_argument("--eval-every", type=int, help="training steps between evaluations")
    parser.add_argument("--units", type=int, help="units of each recurrent layer")
    parser.add_argument("--batch-size", type=int, help="sequences per training batch")
    parser.add_argument("--learning-rate", type=float, help="Adam's learning rate")
    parser.add_argument("--seeds", type=int, help="train each model from this many seeds")
    parser.add_argument("--seed", type=int, default=0, help="first random seed (default: 0)")
    parser.add_argument(
        "--curriculum",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="agreement only: train a run at T on an equal mix of every length <= T of "
        "--lengths (the old compare) instead of T alone (default: --no-curriculum)",
    )
    parser.add_argument(
        "--export",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="export each first-seed model as a SavedModel (needs TensorFlow; "
        "default: on with the TensorFlow backend)",
    )
    parser.add_argument(
        "--tensorboard",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write TensorBoard logs and GateStatistics of each first-seed model (needs "
        "TensorFlow; default: on where it is installed)",
    )
    parser.add_argument(
        "--out", default="compare-out", help="output directory (default: %(default)s)"
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a smoke run of about 30 seconds")
    size.add_argument(
        "--full", action="store_true", help="T up to 1000: hours on a CPU (docs/main-job.md)"
    )


# ------------------------------------------------------------------------------ arguments
def greff_variants():
    """The nine Greff et al. configurations as specs, where the package has them."""
    import keras_lstm_variants as klv

    return [f"greff:{name}" for name in getattr(klv, "GREFF_VARIANTS", ())]


def parse_variants(text):
    """The model specs of ``--variants``, checked by constructing each layer once."""
    known = ", ".join(dict.fromkeys([*VARIANTS, BASELINE, "greff", "all"]))
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise UsageError(f"--variants: no model given; choose from {known}")
    names = []
    for item in items:
        lowered = item.lower()
        if lowered == "all":
            names += [*VARIANTS, BASELINE]
        elif lowered == "greff" and greff_variants():
            names += greff_variants()
        elif lowered == BASELINE:
            names.append(BASELINE)
        else:
            try:
                name, kwargs = parse_spec(item)
                VARIANTS[name][1](2, **kwargs)
            except (ValueError, TypeError) as error:
                raise UsageError(f"--variants: {item!r}: {error} (models: {known})") from None
            head, *options = item.split("+")
            base, colon, variant = head.strip().partition(":")  # the variant keeps its case
            head = base.strip().lower() + colon + variant.strip()
            names.append("+".join([head, *(option.strip() for option in options)]))
    return list(dict.fromkeys(names))


def parse_lengths(text, task):
    try:
        lengths = [int(part) for part in text.split(",")]
    except ValueError:
        lengths = []
    if not lengths or any(not task.min_length <= t <= MAX_LENGTH for t in lengths):
        raise UsageError(
            f"--lengths: expected comma-separated integers from {task.min_length} to "
            f"{MAX_LENGTH} for task {task.name}; received {text!r}"
        )
    return sorted(set(lengths))


def check_positive(option, value):
    if value < 1:
        raise UsageError(f"{option}: must be a positive integer; received {value}")
    return value


def check_learning_rate(value):
    if not 0 < value < 1:  # also rejects nan
        raise UsageError(f"--learning-rate: must be between 0 and 1; received {value}")
    return value


def check_seeds(first, count):
    if not 0 <= first <= MAX_SEED:
        raise UsageError(f"--seed: must be an integer from 0 to {MAX_SEED}; received {first}")
    if first + count - 1 > MAX_SEED:
        raise UsageError(
            f"--seeds: seeds {first} to {first + count - 1} pass the largest seed {MAX_SEED}; "
            "lower --seed or --seeds"
        )
    return list(range(first, first + count))


def check_tasks(name):
    if name == "all":
        return list(TASKS)
    if name not in TASKS:
        raise UsageError(f"--task: unknown task {name!r}; choose from {', '.join(TASKS)}, all")
    return [name]


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
            "the plot needs matplotlib, which is not installed; install it with "
            'pip install "keras-lstm-variants[examples]" (or pip install matplotlib)'
        ) from None
    matplotlib.use("Agg")


def tensorflow_available():
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        return False
    return True


def settings(args):
    """The validated settings of a run, one dict per task, from the command line over the
    task's preset; raises :class:`UsageError` before any work."""
    preset_name = "quick" if args.quick else "full" if args.full else "default"
    tasks = check_tasks(args.task)
    if args.curriculum and "agreement" not in tasks:
        raise UsageError("--curriculum: only the agreement task has one; use --task agreement")
    variants = parse_variants(args.variants)
    has_tensorflow = tensorflow_available()
    export = args.export
    if export and not has_tensorflow:
        raise UsageError("--export: SavedModel export needs TensorFlow, which is not installed")
    if args.tensorboard and not has_tensorflow:
        print("compare: note: TensorFlow is not installed: no TensorBoard logs or GateStatistics")
    if export is None:
        export = has_tensorflow and keras.backend.backend() == "tensorflow"
    configs = []
    for name in tasks:
        task = TASKS[name]
        preset = {**COMMON, **PRESETS[name][preset_name]}

        def option(key, flag, preset=preset):
            value = getattr(args, key)
            return check_positive(flag, preset[key] if value is None else value)

        steps, eval_every = option("steps", "--steps"), option("eval_every", "--eval-every")
        if eval_every > steps:
            raise UsageError(f"--eval-every: {eval_every} is more than --steps {steps}")
        if steps % eval_every:
            raise UsageError(
                f"--steps: {steps} is not a multiple of --eval-every {eval_every} (a run "
                "trains in whole evaluation intervals)"
            )
        lengths = (
            list(preset["lengths"]) if args.lengths is None else parse_lengths(args.lengths, task)
        )
        learning_rate = (
            preset["learning_rate"] if args.learning_rate is None else (args.learning_rate)
        )
        configs.append(
            {
                "task": name,
                "preset": preset_name,
                "variants": variants,
                "lengths": lengths,
                "steps": steps,
                "eval_every": eval_every,
                "units": option("units", "--units"),
                "batch_size": option("batch_size", "--batch-size"),
                "learning_rate": check_learning_rate(learning_rate),
                "seeds": check_seeds(args.seed, option("seeds", "--seeds")),
                "curriculum": bool(args.curriculum and name == "agreement"),
                "logs": bool(args.tensorboard and has_tensorflow),
                "export": export,
                "backend": keras.backend.backend(),
            }
        )
    return configs


# ------------------------------------------------------------------------------- training
def build_model(task, spec, units, learning_rate=COMMON["learning_rate"]):
    """``Input -> spec's recurrent layer "rnn"(units) -> task's Dense head``, compiled."""
    sequences = {"return_sequences": True} if task.per_step else {}
    if spec == BASELINE:
        recurrent = keras.layers.SimpleRNN(units, name=LAYER_NAME, **sequences)
    else:
        name, kwargs = parse_spec(spec)
        recurrent = VARIANTS[name][1](units, name=LAYER_NAME, **kwargs, **sequences)
    model = keras.Sequential(
        [
            keras.Input((None, task.features), name="sequence"),
            recurrent,
            keras.layers.Dense(task.outputs, activation=task.activation, name="head"),
        ],
        name=re.sub(r"[^A-Za-z0-9_]", "_", spec),
    )
    model.compile(keras.optimizers.Adam(learning_rate), task.loss, jit_compile=JIT_COMPILE)
    return model


class Batches(keras.utils.PyDataset):
    """Fresh training batches of ``task``: ``steps`` per epoch, drawn from ``seed`` and the
    global step number, so every model of a seed sees the same batches in the same order.
    With several ``lengths`` (the agreement curriculum), step ``k`` has length
    ``lengths[k % len(lengths)]``."""

    def __init__(self, task, lengths, batch_size, steps, seed):
        super().__init__()
        self.task, self.lengths, self.batch_size = task, list(lengths), batch_size
        self.steps, self.seed, self.epoch = steps, seed, 0

    def __len__(self):
        return self.steps

    def __getitem__(self, index):
        step = self.epoch * self.steps + index
        length = self.lengths[step % len(self.lengths)]
        return self.task.data(length, self.batch_size, seed=[self.seed, length, 0, step])

    def on_epoch_end(self):
        self.epoch += 1


def held_out(task, length, seed, size=TEST_SIZE):
    """The held-out sequences of ``task`` at ``length`` (another stream than training's)."""
    return task.data(length, size, seed=[seed, length, 1, 0])


def probe_batch(task, length, seed):
    """The GateStatistics probe: :data:`PROBE_SIZE` other sequences at ``length``."""
    return task.data(length, PROBE_SIZE, seed=[seed, length, 2, 0])[0]


class Evaluator(keras.callbacks.Callback):
    """After each epoch of ``eval_every`` steps: the held-out loss and metric at ``length``,
    printed, kept in ``history`` and (with ``log_dir``) written to TensorBoard as
    ``held_out/loss`` and ``held_out/<metric>`` at step = training steps; stops training once
    the task is solved."""

    def __init__(self, task, length, seed, eval_every, log_dir=None):
        super().__init__()
        self.task, self.eval_every = task, eval_every
        self.x, self.y = held_out(task, length, seed)
        self.log_dir, self.history, self.solved_at = log_dir, [], None

    def on_epoch_end(self, epoch, logs=None):
        step = (epoch + 1) * self.eval_every
        loss, metric = self.task.score(self.model.predict_on_batch(self.x), self.y)
        self.history.append({"step": step, "loss": loss, "metric": metric})
        solved = self.task.solved(metric)
        if solved and self.solved_at is None:
            self.solved_at = step
            self.model.stop_training = True
        print(
            f"  step {step}: held-out loss {loss:.4g}, {self.task.metric} {metric:.4g}"
            + (" (solved)" if solved else ""),
            flush=True,
        )
        if self.log_dir:
            write_scalars(
                os.path.join(self.log_dir, "held_out"),
                step,
                {"held_out/loss": loss, f"held_out/{self.task.metric.replace(' ', '_')}": metric},
            )


def write_scalars(log_dir, step, values):
    import tensorflow as tf

    with tf.summary.create_file_writer(log_dir).as_default(step=step):
        for tag, value in values.items():
            tf.summary.scalar(tag, value)


class EpochTimer(keras.callbacks.Callback):
    """Records the wall-clock and the process's CPU seconds of each training epoch (before
    other callbacks' work). On a loaded machine the CPU time is the steadier figure."""

    def __init__(self):
        super().__init__()
        self.seconds, self.cpu_seconds = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._cpu_start = time.perf_counter(), time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)
        self.cpu_seconds.append(time.process_time() - self._cpu_start)


def ms_per_step(seconds, steps):
    """The median epoch time per step, leaving out the first epoch (tracing) when there are
    more."""
    return 1000 * float(np.median(seconds[1:] if len(seconds) > 1 else seconds)) / steps


def directory_name(spec):
    return re.sub(r"[^A-Za-z0-9_.+=-]", "-", spec)


def train_run(config, spec, length, seed, out, first_seed):
    """Train and score one model at one length from one seed; the first seed also writes
    TensorBoard logs and GateStatistics, and at the longest length exports the model. Returns
    the run's record."""
    task = TASKS[config["task"]]
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    keras.utils.set_random_seed(seed)
    model = build_model(task, spec, config["units"], config["learning_rate"])
    lengths = [t for t in config["lengths"] if t <= length] if config["curriculum"] else [length]
    data = Batches(task, lengths, config["batch_size"], config["eval_every"], seed)
    run_name = os.path.join(f"{task.name}-T{length}", directory_name(spec))
    log_dir = os.path.join(out, "tensorboard", run_name) if first_seed and config["logs"] else None
    timer = EpochTimer()
    evaluator = Evaluator(task, length, seed, config["eval_every"], log_dir)
    callbacks = [timer, evaluator]  # the timer first: its epoch ends before the others' work
    if log_dir:
        from .gates import GateStatistics

        callbacks.append(keras.callbacks.TensorBoard(log_dir, write_graph=False))
        if spec != BASELINE:  # SimpleRNN has no gates to trace
            callbacks.append(GateStatistics(log_dir, probe_batch(task, length, seed)))
    model.fit(data, epochs=config["steps"] // config["eval_every"], callbacks=callbacks, verbose=0)
    if first_seed and config["export"] and length == max(config["lengths"]):
        from .export import export_saved_model

        path = os.path.join(out, "saved_models", run_name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        export_saved_model(model, path)
    last = evaluator.history[-1]
    return {
        "model": spec,
        "length": length,
        "seed": seed,
        "parameters": int(model.count_params()),
        "ms_per_step": ms_per_step(timer.seconds, config["eval_every"]),
        "cpu_ms_per_step": ms_per_step(timer.cpu_seconds, config["eval_every"]),
        "steps": last["step"],
        "seconds": time.perf_counter() - wall_start,
        "cpu_seconds": time.process_time() - cpu_start,
        "loss": last["loss"],
        "metric": last["metric"],
        "solved_at_step": evaluator.solved_at,
        "history": evaluator.history,
    }


def summarize(runs):
    """One row per model and length from its runs (one per seed): the median, lowest and
    highest final loss and metric, the seeds that solved the task and the median steps they
    took, and the median ms per training step."""
    groups = {}
    for run in runs:
        groups.setdefault((run["model"], run["length"]), []).append(run)
    rows = []
    for (model, length), group in groups.items():
        losses = [run["loss"] for run in group]
        metrics = [run["metric"] for run in group]
        solved = [run["solved_at_step"] for run in group if run["solved_at_step"] is not None]
        rows.append(
            {
                "model": model,
                "length": length,
                "parameters": group[0]["parameters"],
                "seeds": len(group),
                "solved": len(solved),
                "steps_to_solve": float(np.median(solved)) if solved else None,
                "loss": float(np.median(losses)),
                "min_loss": float(min(losses)),
                "max_loss": float(max(losses)),
                "metric": float(np.median(metrics)),
                "ms_per_step": float(np.median([run["ms_per_step"] for run in group])),
                "cpu_ms_per_step": median_or_none([run.get("cpu_ms_per_step") for run in group]),
            }
        )
    return rows


def median_or_none(values):
    values = [value for value in values if value is not None]
    return float(np.median(values)) if values else None


# -------------------------------------------------------------------------------- results
def format_metric(task, value):
    if task.metric == "MSE":
        return f"{value:.3g}" if value >= 1e-3 else f"{value:.1e}"
    return f"{100 * value:.1f}%"


def format_table(config, rows):
    """The results of one task as a Markdown table: a row per model, a column per length,
    each cell the median final held-out metric over seeds, the seeds that solved the task and
    the median training steps to solve; a last row for the trivial predictor."""
    task = TASKS[config["task"]]
    lengths = sorted({row["length"] for row in rows}) or config["lengths"]
    cells = {(row["model"], row["length"]): row for row in rows}
    models = [m for m in config["variants"] if any((m, t) in cells for t in lengths)]
    header = ["model", "parameters", f"ms/step (T={lengths[-1]})"]
    header += [f"T={t}" for t in lengths]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model in models:
        known = [cells[model, t] for t in lengths if (model, t) in cells]
        longest = cells.get((model, lengths[-1]))
        line = [model, f"{known[0]['parameters']:,}"]
        line.append(f"{longest['ms_per_step']:.1f}" if longest else "")
        for length in lengths:
            row = cells.get((model, length))
            if row is None:
                line.append("")
                continue
            steps = row["steps_to_solve"]
            solve = f"{row['solved']}/{row['seeds']}" + (f" @ {steps:,.0f}" if steps else "")
            line.append(f"{format_metric(task, row['metric'])} ({solve})")
        lines.append("| " + " | ".join(line) + " |")
    trivial = ["trivial predictor", "", ""]
    trivial += [format_metric(task, task.chance(t)) for t in lengths]
    lines.append("| " + " | ".join(trivial) + " |")
    direction = "<" if task.lower_is_better else ">="
    legend = (
        f"{task.description}, {task.length_name}. Each cell: median held-out {task.metric} "
        f"over seeds at the end of the run (solved, {task.metric} {direction} "
        f"{format_metric(task, task.threshold)}, in k/N seeds @ median training steps to "
        f"solve); {config['units']} units, batch {config['batch_size']}, at most "
        f"{config['steps']:,} steps, Adam {config['learning_rate']}"
        + (", curriculum" if config["curriculum"] else "")
        + "."
    )
    return f"{legend}\n\n" + "\n".join(lines)


def write_results(out, report):
    """results.json (settings, rows, every run) and results.md (a table per task), each
    written to a temporary file first and renamed, so an interruption leaves the last
    complete version."""
    for name, text in (
        ("results.json", json.dumps(report, indent=2)),
        ("results.md", markdown(report) + "\n"),
    ):
        path = os.path.join(out, name)
        with open(path + ".tmp", "w") as file:
            file.write(text)
        os.replace(path + ".tmp", path)


def markdown(report):
    parts = []
    for entry in report["tasks"].values():
        parts.append(
            f"## {entry['settings']['task']}\n\n"
            + format_table(entry["settings"], entry["results"])
        )
    return "\n\n".join(parts)


def plot(report, path):
    """Save a PNG with a row per task: the median final held-out loss against ``T`` (band:
    lowest to highest seed; dashed: the trivial predictor's loss), and at the longest ``T``
    each run's held-out loss against training steps (one line per seed)."""
    import matplotlib.pyplot as plt

    entries = [entry for entry in report["tasks"].values() if entry["results"]]
    figure, axes = plt.subplots(len(entries), 2, figsize=(13, 4.2 * len(entries)), squeeze=False)
    for (final, learning), entry in zip(axes, entries, strict=True):
        config, rows, runs = entry["settings"], entry["results"], entry["runs"]
        task = TASKS[config["task"]]
        lengths = sorted({row["length"] for row in rows})
        colours = {}
        for model in config["variants"]:
            mine = sorted((r for r in rows if r["model"] == model), key=lambda r: r["length"])
            if not mine:
                continue
            x = [r["length"] for r in mine]
            (line,) = final.plot(x, [r["loss"] for r in mine], marker="o", label=model)
            colours[model] = line.get_color()
            final.fill_between(
                x,
                [r["min_loss"] for r in mine],
                [r["max_loss"] for r in mine],
                color=colours[model],
                alpha=0.15,
                linewidth=0,
            )
        final.plot(lengths, [task.baseline(t) for t in lengths], "k--", label="trivial")
        if task.metric == task.loss.upper():  # the solved test reads the loss: draw it
            for axes in (final, learning):
                axes.axhline(task.threshold, color="grey", linestyle=":", label="solved below")
        final.set_xscale("log")
        final.set_yscale("log")
        final.set_xticks(lengths, [str(t) for t in lengths])
        final.set_xticks([], minor=True)
        final.set_xlabel(task.length_name)
        final.set_ylabel("held-out loss (" + task.loss.replace("_", " ") + ")")
        final.set_title(f"{task.name}: after training (median over seeds)")
        final.legend(fontsize="small")
        longest = lengths[-1]
        for run in runs:
            if run["length"] != longest:
                continue
            steps = [point["step"] for point in run["history"]]
            losses = [point["loss"] for point in run["history"]]
            learning.plot(steps, losses, color=colours[run["model"]], alpha=0.8, linewidth=1.2)
        learning.axhline(task.baseline(longest), color="k", linestyle="--", linewidth=1)
        learning.set_yscale("log")
        learning.set_xlabel("training steps (a run stops once solved)")
        learning.set_ylabel("held-out loss")
        learning.set_title(f"{task.name}: learning curves at T={longest}, one line per seed")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def describe(config):
    return (
        f"task {config['task']} ({config['preset']}): {len(config['variants'])} models "
        f"({', '.join(config['variants'])}), T in {config['lengths']}, at most "
        f"{config['steps']} steps of {config['batch_size']} (evaluated every "
        f"{config['eval_every']}), {config['units']} units, learning rate "
        f"{config['learning_rate']}, seeds {', '.join(map(str, config['seeds']))}"
        + (", curriculum" if config["curriculum"] else "")
    )


def run(args):
    configs = settings(args)
    require_matplotlib()
    out = prepare_out(args.out)
    first = configs[0]
    if not first["export"] and args.export is None:
        print(
            "compare: note: no SavedModel exports on this backend (--export turns them on; "
            "they need TensorFlow)",
            flush=True,
        )
    for config in configs:
        print(f"compare: {describe(config)}; writing to {out}", flush=True)
    report = {"tasks": {}}
    plan = [
        (config, spec, length, seed)
        for config in configs
        for seed in config["seeds"]
        for length in config["lengths"]
        for spec in config["variants"]
    ]
    begin, done = time.perf_counter(), 0
    try:
        for number, (config, spec, length, seed) in enumerate(plan, 1):
            entry = report["tasks"].setdefault(
                config["task"], {"settings": config, "results": [], "runs": []}
            )
            label = f"[{number}/{len(plan)}] {config['task']} T={length} {spec}, seed {seed}"
            print(label, flush=True)
            start = time.perf_counter()
            record = train_run(config, spec, length, seed, out, seed == config["seeds"][0])
            entry["runs"].append(record)
            entry["results"] = summarize(entry["runs"])
            write_results(out, report)
            done += 1
            outcome = (
                f"solved at step {record['solved_at_step']}"
                if record["solved_at_step"]
                else "not solved"
            )
            print(f"{label}: {outcome}, {time.perf_counter() - start:.0f} s", flush=True)
    except KeyboardInterrupt:
        for entry in report["tasks"].values():
            entry["results"] = summarize(entry["runs"])
        write_results(out, report)
        print(
            f"compare: interrupted after {done} of {len(plan)} runs; "
            f"the finished runs are in {os.path.join(out, 'results.json')}",
            file=sys.stderr,
            flush=True,
        )
        print(f"\n{markdown(report)}\n", flush=True)
        return 130
    plot(report, os.path.join(out, "compare.png"))
    print(f"\n{markdown(report)}\n")
    print(f"plot: {os.path.join(out, 'compare.png')}")
    if first["export"]:
        print(f"models (first seed, longest T): {os.path.join(out, 'saved_models')}/")
    if first["logs"]:
        print(f"TensorBoard (first seed): tensorboard --logdir {os.path.join(out, 'tensorboard')}")
    minutes = (time.perf_counter() - begin) / 60
    print(f"compare: done in {math.floor(minutes)} min {60 * (minutes % 1):.0f} s")
    return 0
