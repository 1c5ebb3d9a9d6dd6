"""Training one model of ``compare``: the model, its batches, the held-out evaluation, timing.

:func:`train_run` trains one (task, model, length, seed) and returns its record; every name
here is independent of how runs are scheduled (in this process or in a Ray trial).
"""

import os
import re
import time

import keras
import numpy as np

from .. import VARIANTS
from .specs import parse_spec
from .tasks import TASKS

#: Name of the keras.layers.SimpleRNN baseline on the command line.
BASELINE = "simplernn"
#: Every model's recurrent layer has this name, so TensorBoard overlays the variants' gates.
LAYER_NAME = "rnn"
#: Held-out sequences scored at every evaluation.
TEST_SIZE = 256
#: Sequences of the GateStatistics probe batch.
PROBE_SIZE = 8
#: XLA compiles one program per length: minutes under load, for little gain here.
JIT_COMPILE = False
#: Adam's learning rate where none is given.
LEARNING_RATE = 0.01


def build_model(task, spec, units, learning_rate=LEARNING_RATE):
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

    def __init__(self, task, length, seed, eval_every, log_dir=None, verbose=True):
        super().__init__()
        self.task, self.eval_every, self.verbose = task, eval_every, verbose
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
        if self.verbose:
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


def run_name(task_name, length, spec):
    """``<task>-T<length>/<model>``: a run's directory under tensorboard/ and saved_models/."""
    return os.path.join(f"{task_name}-T{length}", directory_name(spec))


def export_path(out, task_name, length, spec):
    """Where the first seed's model at the longest length is exported."""
    return os.path.join(out, "saved_models", run_name(task_name, length, spec))


def check_export_target(path):
    """Raise ValueError naming ``path`` unless a SavedModel can be written there: it is new,
    empty, or a complete SavedModel (replaced). A directory with other files and no
    ``saved_model.pb`` (what an interrupted export leaves: ``variables/`` alone) is refused:
    it is someone's data or a broken model, and deleting it is the user's call."""
    if not os.path.exists(path):
        return
    if not os.path.isdir(path):
        raise ValueError(f"{path} exists and is a file, not a SavedModel directory")
    if os.listdir(path) and not os.path.exists(os.path.join(path, "saved_model.pb")):
        raise ValueError(
            f"{path} holds files but no saved_model.pb (an interrupted export?); remove it "
            "or choose another --out"
        )


def export_model(model, path):
    """Export ``model`` as a SavedModel at ``path`` through a sibling temporary directory,
    renamed into place once complete: an interruption never leaves a half-written ``path``."""
    import shutil

    from .. import export

    check_export_target(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    partial = f"{path}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        export.export_saved_model(model, partial)
        if os.path.exists(path):
            shutil.rmtree(path)
        os.replace(partial, path)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def failure(stage, error):
    """The record of a step that failed after (or beside) training: what and why, one line."""
    text = f"{type(error).__name__}: {error}".splitlines()[0]
    return {"stage": stage, "error": text}


def train_run(config, spec, length, seed, out, first_seed, verbose=True):
    """Train and score one model at one length from one seed; the first seed also writes
    TensorBoard logs and GateStatistics, and at the longest length exports the model. Returns
    the run's record. A failure of the logs or of the export does not lose the run: it is
    recorded in the record's ``failures`` (``stage``, ``error``) and the record returned."""
    task = TASKS[config["task"]]
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    keras.utils.set_random_seed(seed)
    model = build_model(task, spec, config["units"], config["learning_rate"])
    lengths = [t for t in config["lengths"] if t <= length] if config["curriculum"] else [length]
    data = Batches(task, lengths, config["batch_size"], config["eval_every"], seed)
    name = run_name(task.name, length, spec)
    failures = []
    log_dir = os.path.join(out, "tensorboard", name) if first_seed and config["logs"] else None
    if log_dir:
        try:
            os.makedirs(log_dir, exist_ok=True)
        except OSError as error:
            failures.append(failure("tensorboard", error))
            log_dir = None
    timer = EpochTimer()
    evaluator = Evaluator(task, length, seed, config["eval_every"], log_dir, verbose=verbose)
    callbacks = [timer, evaluator]  # the timer first: its epoch ends before the others' work
    if log_dir:
        from ..gates import GateStatistics

        callbacks.append(keras.callbacks.TensorBoard(log_dir, write_graph=False))
        if spec != BASELINE:  # SimpleRNN has no gates to trace
            callbacks.append(GateStatistics(log_dir, probe_batch(task, length, seed)))
    model.fit(data, epochs=config["steps"] // config["eval_every"], callbacks=callbacks, verbose=0)
    if first_seed and config["export"] and length == max(config["lengths"]):
        try:
            export_model(model, export_path(out, task.name, length, spec))
        except Exception as error:  # the trained run is kept whatever the export hit
            failures.append(failure("export", error))
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
        "failures": failures,
    }
