"""``keras-lstm-variants compare``: which cells learn a dependency across ``T`` steps.

The literature's claim (Bengio, Simard & Frasconi 1994; Hochreiter & Schmidhuber 1997) is about
*learning* across a long gap: gradient descent through a plain RNN finds dependencies over a
few steps and fails as the gap grows, while gated cells carry the error back. ``compare``
measures that on the classic tasks of :data:`~keras_lstm_variants.commands.tasks.TASKS`
(``--task``: ``adding``, ``copy``, ``agreement``, or ``all`` one after the other): each model
trains at ONE fixed length ``T`` per run (no shorter sequences mixed in), for each ``T`` of
``--lengths``, from ``--seeds`` seeds, on fresh batches that are the same for every model::

    Input(None, features) -> recurrent layer "rnn"(units) -> Dense head of the task

Each (task, model, ``T``, seed) run is one trial on Ray (:mod:`.trials`; every core here by
default, a cluster with ``--address``). Every ``--eval-every`` steps a run scores the model on
held-out sequences at ``T`` and stops once the task's "solved" test passes (or after
``--steps``). Under ``--out`` it writes,
after every run (so an interrupted run keeps what finished):

* ``trials.jsonl``: one line per finished run, the moment it ends; a re-run into the same
  ``--out`` skips those runs (``--no-resume`` starts afresh);
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
import math
import os
import sys
import time

import keras

from .. import VARIANTS
from .cli import UsageError
from .compare_runs import build_report, save, trial, trial_configs, trial_id, trial_label
from .plot import plot
from .report import (
    markdown,
    summarize,  # noqa: F401  (re-exported)
)
from .specs import check_specs, parse_spec
from .tasks import TASKS
from .training import (  # noqa: F401  (re-exported: the names a trial and the tests use)
    BASELINE,
    LAYER_NAME,
    Batches,
    build_model,
    check_export_target,
    export_path,
    held_out,
    train_run,
)
from .trials import TrialsError, add_trial_arguments, read_records, run_trials, trial_arguments

#: The variants of the default run.
DEFAULT_VARIANTS = ("lstm", "peephole", "cifg", "gru", BASELINE)
DEFAULT_TASK = "adding"
#: Longest length accepted (a run at T holds batches of about T steps).
MAX_LENGTH = 10_000
MAX_SEED = 2**32 - 1

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
    add_trial_arguments(
        parser, "each (task, model, T, seed) run is one trial on Ray (docs/main-job.md)"
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
    """The model specs of ``--variants``, each name and option known; whether a spec builds
    at the run's units is :func:`check_variants`'s question."""
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
                parse_spec(item)
            except ValueError as error:
                raise UsageError(f"--variants: {item!r}: {error} (models: {known})") from None
            head, *options = item.split("+")
            base, colon, variant = head.strip().partition(":")  # the variant keeps its case
            head = base.strip().lower() + colon + variant.strip()
            names.append("+".join([head, *(option.strip() for option in options)]))
    return list(dict.fromkeys(names))


def check_variants(variants, units):
    """Build each model spec at the ``units`` of the run (e.g. ``num_heads`` must divide
    them), before any training; raise naming the spec."""
    try:
        check_specs([spec for spec in variants if spec != BASELINE], units)
    except ValueError as error:
        raise UsageError(f"--variants: {error}") from None


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
        units = option("units", "--units")
        check_variants(variants, units)
        configs.append(
            {
                "task": name,
                "preset": preset_name,
                "variants": variants,
                "lengths": lengths,
                "steps": steps,
                "eval_every": eval_every,
                "units": units,
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
def describe(config):
    return (
        f"task {config['task']} ({config['preset']}): {len(config['variants'])} models "
        f"({', '.join(config['variants'])}), T in {config['lengths']}, at most "
        f"{config['steps']} steps of {config['batch_size']} (evaluated every "
        f"{config['eval_every']}), {config['units']} units, learning rate "
        f"{config['learning_rate']}, seeds {', '.join(map(str, config['seeds']))}"
        + (", curriculum" if config["curriculum"] else "")
    )


def check_exports(configs, out):
    """Every export target of the run can be written (before any training)."""
    for config in configs:
        if config["export"]:
            for spec in config["variants"]:
                path = export_path(out, config["task"], max(config["lengths"]), spec)
                try:
                    check_export_target(path)
                except ValueError as error:
                    raise UsageError(f"--export: {error}") from None


def run(args):
    configs = settings(args)
    options = trial_arguments(args)
    require_matplotlib()
    out = prepare_out(args.out)
    check_exports(configs, out)
    first = configs[0]
    if not first["export"] and args.export is None:
        print(
            "compare: note: no SavedModel exports on this backend (--export turns them on; "
            "they need TensorFlow)",
            flush=True,
        )
    for config in configs:
        print(f"compare: {describe(config)}; writing to {out}", flush=True)
    plan = trial_configs(configs, out)
    number = {trial_id(config): n for n, config in enumerate(plan, 1)}
    records = read_records(out) if args.resume else {}
    skipped = sum(1 for config in plan if "result" in records.get(trial_id(config), {}))
    if skipped:
        print(f"compare: resuming: {skipped} of {len(plan)} runs are done already", flush=True)
    begin = time.perf_counter()

    def on_record(record):
        records[record["id"]] = record
        label = trial_label(record["config"])
        text = (
            f"[{number[record['id']]}/{len(plan)}] {label['task']} T={label['length']} "
            f"{label['model']}, seed {label['seed']}"
        )
        if "error" in record:
            print(f"{text}: FAILED: {record['error']}", flush=True)
        else:
            result = record["result"]
            solved = result["solved_at_step"]
            outcome = f"solved at step {solved}" if solved else "not solved"
            seconds = result.get("seconds", 0.0)
            print(f"{text}: {outcome}, {seconds:.0f} s ({record['node']})", flush=True)
            for failed in result.get("failures", ()):
                print(f"{text}: {failed['stage']} failed: {failed['error']}", flush=True)
        save(out, build_report(configs, plan, records))

    try:
        run_trials(trial, plan, out, on_record=on_record, **options)
    except TrialsError as error:
        raise UsageError(str(error)) from None
    except KeyboardInterrupt:
        report = build_report(configs, plan, read_records(out))
        save(out, report)
        done = sum(len(entry["runs"]) for entry in report["tasks"].values())
        print(
            f"compare: interrupted after {done} of {len(plan)} runs; the finished runs are in "
            f"{os.path.join(out, 'results.json')} (run again to resume)",
            file=sys.stderr,
            flush=True,
        )
        print(f"\n{markdown(report)}\n", flush=True)
        return 130
    report = build_report(configs, plan, read_records(out))
    try:
        plot(report, os.path.join(out, "compare.png"))
    except Exception as error:  # the results are kept whatever the picture hit
        report["failed"].append({"stage": "plot", "error": f"{type(error).__name__}: {error}"})
        print(f"compare: plot failed: {type(error).__name__}: {error}", flush=True)
    save(out, report)
    print(f"\n{markdown(report)}\n")
    print(f"plot: {os.path.join(out, 'compare.png')}")
    if first["export"]:
        print(f"models (first seed, longest T): {os.path.join(out, 'saved_models')}/")
    if first["logs"]:
        print(f"TensorBoard (first seed): tensorboard --logdir {os.path.join(out, 'tensorboard')}")
    minutes = (time.perf_counter() - begin) / 60
    print(f"compare: done in {math.floor(minutes)} min {60 * (minutes % 1):.0f} s")
    failures = report["failed"] + [
        failure
        for entry in report["tasks"].values()
        for run_record in entry["runs"]
        for failure in run_record.get("failures", ())
    ]
    if failures:
        print(f"compare: {len(failures)} failure(s), listed in results.json", file=sys.stderr)
    return 1 if failures else 0
