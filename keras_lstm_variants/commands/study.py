"""``keras-lstm-variants study``: Greff et al. 2017's random-search comparison of LSTM variants.

Greff, Srivastava, Koutník, Steunebrink & Schmidhuber 2017, "LSTM: A Search Space Odyssey",
compared the vanilla LSTM ``V`` with eight variants by giving *each* variant the same random
search over its hyperparameters (200 trials per variant and data set), then testing each
variant's distribution of test-set results against V's and measuring which hyperparameters
matter (fANOVA). A fixed learning rate for every variant compares each at one point of its
hyperparameter space; the search compares them over the whole space.

    keras-lstm-variants study --task adding --lengths 50 --variants greff --trials 30

For every task and length ``T``, every variant trains ``--trials`` models, trial ``i`` with
hyperparameter draw ``i`` of :mod:`.study_space` (the same draws and the same training seed
for every variant). A trial (:func:`run_trial`) trains the model of ``compare``

    Input(None, features) -> recurrent layer "rnn"(units) -> Dense head of the task

on fresh batches with Gaussian input noise, for ``--steps`` steps (no stop once solved: the
final metrics of all trials are compared), scores it every ``--eval-every`` steps on a
validation set, and reports the task's metric on a separate test set with the weights of the
best validation score (early stopping as Greff et al.). Validation and test sets are the same
for every trial of a study. The trials run on the engine of ``compare``: an embedded local Ray
by default, a cluster with ``--address``; each trial's result is written when it ends, and
re-running into the same ``--out`` resumes (finished trials are kept, the rest run).

The analysis (:mod:`.study_analysis`) is written next to the results, per task and length:
``<out>/<task>-T<T>/study.md``, ``study.json``, ``study_boxes.png``,
``study_importance.png``, ``study_learning_rate.png``.
"""

import json
import math
import os
import sys
import time

import keras
import numpy as np

from . import compare, training
from .cli import UsageError
from .study_space import DEFAULT_SPACE, GREFF_SGD, OPTIMIZERS, Space, draws, noise_scale
from .tasks import TASKS
from .trials import TrialsError, add_trial_arguments, run_trials, trial_arguments

#: Validation sequences scored every ``--eval-every`` steps (they pick the best weights).
VALIDATION_SIZE = 256
#: Test sequences scored once, with the best validation weights: the study's metric.
TEST_SIZE = 1024
#: Sequences whose per-channel std sets the unit of the input noise.
NOISE_PROBE = 256
DEFAULTS = {"trials": 30, "steps": 1000, "eval_every": 100, "lengths": (50,)}
#: The settings of the last run into ``--out``.
SETTINGS_FILE = "study-settings.json"


def configure(parser):
    parser.add_argument("--task", default="adding", help=f"one of: {', '.join(TASKS)}")
    parser.add_argument(
        "--variants",
        default="greff",
        help="comma-separated models as in compare (default: greff, Greff et al.'s nine; "
        "the first greff:V, or the first model, is the baseline of the tests)",
    )
    parser.add_argument(
        "--lengths",
        default=",".join(map(str, DEFAULTS["lengths"])),
        help="comma-separated lengths T: one study per T (default: %(default)s)",
    )
    parser.add_argument(
        "--trials",
        type=int,
        default=DEFAULTS["trials"],
        help="hyperparameter draws per variant (Greff et al.: 200; default: %(default)s)",
    )
    parser.add_argument("--steps", type=int, default=DEFAULTS["steps"], help="training steps")
    parser.add_argument(
        "--eval-every", type=int, default=DEFAULTS["eval_every"], help="steps between validations"
    )
    parser.add_argument("--seed", type=int, default=0, help="the study's seed (default: 0)")
    parser.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        default="adam",
        help="adam (default), or sgd: SGD with Nesterov momentum and Greff et al.'s ranges",
    )
    parser.add_argument("--learning-rate-range", help="LOW,HIGH, log-uniform")
    parser.add_argument("--units-range", help="LOW,HIGH, log-uniform")
    parser.add_argument("--noise-range", help="LOW,HIGH, uniform, in input stds")
    parser.add_argument("--batch-sizes", help="comma-separated batch sizes drawn from")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level")
    parser.add_argument(
        "--out", default="study-out", help="output directory (default: %(default)s)"
    )
    add_trial_arguments(parser, "each (variant, draw, T) is one trial on Ray, as compare's runs")


# ------------------------------------------------------------------------------ settings
def _pair(option, text, kind=float):
    try:
        low, high = (kind(part) for part in text.split(","))
    except ValueError:
        raise UsageError(f"{option}: expected LOW,HIGH; received {text!r}") from None
    return low, high


def space_from(args):
    """The :class:`Space` of the command line (Greff's SGD ranges under ``--optimizer sgd``)."""
    base = GREFF_SGD if args.optimizer == "sgd" else DEFAULT_SPACE
    fields = {}
    if args.learning_rate_range:
        fields["learning_rate"] = _pair("--learning-rate-range", args.learning_rate_range)
    if args.units_range:
        fields["units"] = _pair("--units-range", args.units_range, int)
    if args.noise_range:
        fields["input_noise"] = _pair("--noise-range", args.noise_range)
    if args.batch_sizes:
        try:
            fields["batch_sizes"] = tuple(int(b) for b in args.batch_sizes.split(","))
        except ValueError:
            raise UsageError(
                f"--batch-sizes: expected integers; got {args.batch_sizes!r}"
            ) from None
    try:
        return Space(**{**vars(base), **fields})
    except ValueError as error:
        raise UsageError(f"study: {error}") from None


def settings(args):
    """The validated settings of a study, before any work (:class:`UsageError` otherwise)."""
    if args.task not in TASKS:
        raise UsageError(f"--task: unknown task {args.task!r}; choose from {', '.join(TASKS)}")
    task = TASKS[args.task]
    variants = compare.parse_variants(args.variants)
    if compare.BASELINE in variants:
        raise UsageError(f"--variants: {compare.BASELINE} has no gates to compare; leave it out")
    if len(variants) < 2:
        raise UsageError("--variants: a study compares at least two models")
    for option, value in (("--trials", args.trials), ("--steps", args.steps)):
        compare.check_positive(option, value)
    compare.check_positive("--eval-every", args.eval_every)
    trial_arguments(args)  # checks --threads and --gpus-per-trial
    if args.steps % args.eval_every:
        raise UsageError(
            f"--steps: {args.steps} is not a multiple of --eval-every {args.eval_every}"
        )
    if not 0 < args.alpha < 1:
        raise UsageError(f"--alpha: must be between 0 and 1; received {args.alpha}")
    compare.check_seeds(args.seed, 1)
    space = space_from(args)
    units = sorted({draw["units"] for draw in draws(args.trials, args.seed, space)})
    compare.check_variants(variants, units)  # every spec builds at every drawn size
    baseline = next((v for v in variants if v.lower() == "greff:v"), variants[0])
    return {
        "task": task.name,
        "lengths": compare.parse_lengths(args.lengths, task),
        "variants": variants,
        "baseline": baseline,
        "trials": args.trials,
        "steps": args.steps,
        "eval_every": args.eval_every,
        "seed": args.seed,
        "space": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(space).items()},
        "alpha": args.alpha,
        "backend": keras.backend.backend(),
    }


def trial_configs(config):
    """One JSON-ready config per (length, variant, draw): what :func:`run_trial` needs."""
    space = Space(**config["space"])
    shared = draws(config["trials"], config["seed"], space)
    configs = []
    for length in config["lengths"]:
        for draw in shared:
            for variant in config["variants"]:
                configs.append(
                    {
                        "name": f"{config['task']}-T{length}/{variant}",
                        "task": config["task"],
                        "length": length,
                        "variant": variant,
                        "draw": draw,
                        "steps": config["steps"],
                        "eval_every": config["eval_every"],
                        "study_seed": config["seed"],
                    }
                )
    return configs


# -------------------------------------------------------------------------------- trial
def predict(model, x, size=VALIDATION_SIZE):
    """``model``'s outputs for ``x`` in batches of the validation set's size (one traced
    shape for both sets)."""
    return np.concatenate(
        [model.predict_on_batch(x[start : start + size]) for start in range(0, len(x), size)]
    )


class NoisyBatches(training.Batches):
    """compare's training batches plus Gaussian noise of per-channel std ``scale``."""

    def __init__(self, task, length, batch_size, steps, seed, scale):
        super().__init__(task, [length], batch_size, steps, seed)
        self.scale = np.asarray(scale, dtype=np.float32)

    def __getitem__(self, index):
        x, y = super().__getitem__(index)
        if not self.scale.any():
            return x, y
        step = self.epoch * self.steps + index
        rng = np.random.default_rng([self.seed, self.lengths[0], 3, step])
        return x + self.scale * rng.standard_normal(x.shape, dtype=np.float32), y


class BestValidation(keras.callbacks.Callback):
    """Every epoch of ``eval_every`` steps: the validation loss and metric into ``history``;
    keeps the weights of the best validation metric (the first of equals)."""

    def __init__(self, task, data, eval_every):
        super().__init__()
        self.task, (self.x, self.y), self.eval_every = task, data, eval_every
        self.history, self.best, self.best_weights, self.best_step = [], None, None, None

    def on_epoch_end(self, epoch, logs=None):
        step = (epoch + 1) * self.eval_every
        loss, metric = self.task.score(predict(self.model, self.x), self.y)
        self.history.append({"step": step, "loss": loss, "metric": metric})
        if not math.isfinite(loss) or not math.isfinite(metric):
            self.model.stop_training = True
            return
        sign = 1 if self.task.lower_is_better else -1
        if self.best is None or sign * metric < sign * self.best:
            self.best, self.best_step = metric, step
            self.best_weights = self.model.get_weights()


def run_trial(config):
    """Train one model of a study (a config of :func:`trial_configs`) and score it.

    Returns a record: ``metric`` (the test-set metric with the best validation weights; NaN
    if no validation was finite), ``validation`` (that best validation metric), ``best_step``,
    ``final_validation`` (the last one), ``history`` (the validation learning curve),
    ``params`` (the searched hyperparameters), parameters, times.
    """
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    task, draw, length = TASKS[config["task"]], config["draw"], config["length"]
    study_seed = config["study_seed"]
    keras.utils.set_random_seed(draw["seed"])
    model = training.build_model(task, config["variant"], draw["units"], draw["learning_rate"])
    if draw["optimizer"] == "sgd":
        optimizer = keras.optimizers.SGD(draw["learning_rate"], draw["momentum"], nesterov=True)
        model.compile(optimizer, task.loss, jit_compile=training.JIT_COMPILE)
    probe = task.data(length, NOISE_PROBE, seed=[study_seed, length, 5, 0])[0]
    scale = draw["input_noise"] * noise_scale(probe)
    data = NoisyBatches(task, length, draw["batch_size"], config["eval_every"], draw["seed"], scale)
    validation = task.data(length, VALIDATION_SIZE, seed=[study_seed, length, 1, 0])
    test = task.data(length, TEST_SIZE, seed=[study_seed, length, 4, 0])
    best = BestValidation(task, validation, config["eval_every"])
    callbacks = [best, keras.callbacks.TerminateOnNaN()]
    model.fit(data, epochs=config["steps"] // config["eval_every"], callbacks=callbacks, verbose=0)
    if best.best_weights is None:
        loss = metric = math.nan
    else:
        model.set_weights(best.best_weights)
        loss, metric = task.score(predict(model, test[0]), test[1])
    params = {k: draw[k] for k in ("learning_rate", "units", "input_noise", "batch_size")}
    if draw["optimizer"] == "sgd":
        params["momentum"] = draw["momentum"]
    return {
        "name": config["name"],
        "status": "ok",
        "task": task.name,
        "length": length,
        "variant": config["variant"],
        "trial": draw["trial"],
        "seed": draw["seed"],
        "params": params,
        "metric": metric,
        "loss": loss,
        "validation": math.nan if best.best is None else best.best,
        "best_step": best.best_step,
        "final_validation": best.history[-1]["metric"] if best.history else math.nan,
        "steps": best.history[-1]["step"] if best.history else 0,
        "parameters": int(model.count_params()),
        "history": best.history,
        "seconds": time.perf_counter() - wall_start,
        "cpu_seconds": time.process_time() - cpu_start,
    }


# ------------------------------------------------------------------------------- runner
def result_of(record):
    """The study's view of a runner record: the trial's result, or a ``failed`` one."""
    if record.get("result") is not None:
        return record["result"]
    config = record["config"]
    return {
        "name": config["name"],
        "status": "failed",
        "variant": config["variant"],
        "length": config["length"],
        "trial": config["draw"]["trial"],
        "error": record.get("error"),
    }


# ----------------------------------------------------------------------------- analysis
def analyse_and_write(config, results, out):
    """The analysis of each length's finished trials, under ``<out>/<task>-T<T>/``."""
    from . import study_analysis

    task = TASKS[config["task"]]
    parameters = Space(**config["space"]).parameters()
    written = {}
    for length in config["lengths"]:
        mine = [r for r in results if r["length"] == length]
        if not any(r["status"] == "ok" and r["variant"] == config["baseline"] for r in mine):
            print(f"study: no finished trial of {config['baseline']} at T={length}: no analysis")
            continue
        result = study_analysis.analyse(
            mine,
            parameters,
            baseline=config["baseline"],
            lower_is_better=task.lower_is_better,
            chance=task.chance(length),
            metric_name=task.metric,
            alpha=config["alpha"],
            seed=config["seed"],
        )
        result["settings"] = {**config, "length": length}
        title = f"Study: {task.description}, T = {length}"
        written[length] = study_analysis.write_analysis(
            result, os.path.join(out, f"{task.name}-T{length}"), title=title
        )
    return written


def _require_analysis():
    missing = []
    for module in ("scipy", "optuna", "sklearn", "matplotlib"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise UsageError(
            f"the study's analysis needs {', '.join(missing)}, not installed; install them "
            'with pip install "keras-lstm-variants[examples]"'
        )


def run(args):
    config = settings(args)
    _require_analysis()
    out = compare.prepare_out(args.out)
    with open(os.path.join(out, SETTINGS_FILE), "w") as file:
        json.dump(config, file, indent=2)
    configs = trial_configs(config)
    print(
        f"study: {config['task']} T in {config['lengths']}, {len(config['variants'])} models x "
        f"{config['trials']} draws = {len(configs)} trials of {config['steps']} steps "
        f"({config['space']['optimizer']}); writing to {out}",
        flush=True,
    )
    done = [0]

    def report(record):
        done[0] += 1
        result = result_of(record)
        if result["status"] != "ok":
            outcome = f"failed: {result.get('error')}"
        else:
            outcome = f"{result['metric']:.4g} (best validation at step {result['best_step']})"
        print(f"[{done[0]} new] {result['name']} trial {result['trial']}: {outcome}", flush=True)

    begin = time.perf_counter()
    try:
        records = run_trials(run_trial, configs, out, on_record=report, **trial_arguments(args))
    except TrialsError as error:
        raise UsageError(str(error)) from None
    except KeyboardInterrupt:
        print(
            f"study: interrupted; the finished trials are in {out}; run the same command "
            "again to resume",
            file=sys.stderr,
        )
        return 130
    results = [result_of(record) for record in records]
    if done[0] < len(configs):
        print(f"study: {len(configs) - done[0]} of {len(configs)} trials were already in {out}")
    written = analyse_and_write(config, results, out)
    for paths in written.values():
        with open(paths["md"]) as file:
            print("\n" + file.read())
        print(f"analysis: {os.path.dirname(paths['md'])}/")
    minutes = (time.perf_counter() - begin) / 60
    print(f"study: done in {math.floor(minutes)} min {60 * (minutes % 1):.0f} s")
    return 0
