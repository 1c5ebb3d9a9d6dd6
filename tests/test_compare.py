"""``keras-lstm-variants compare`` end to end, its bad-input errors, Ctrl-C, and its parts."""

import functools
import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from helpers import TRIAL_OPTION_REFUSALS, assert_refused

from keras_lstm_variants import VARIANTS
from keras_lstm_variants.commands import cli, compare, compare_runs
from keras_lstm_variants.commands.tasks import TASKS

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
#: The models of the end-to-end run: a gated variant and the baseline.
MODELS = ["gru", compare.BASELINE]


def run_command(command, timeout=1800, env=ENV):
    return subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


def _tags(directory):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(directory), size_guidance={"tensors": 0, "scalars": 0})
    accumulator.Reload()
    return accumulator


# --------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One ``--quick --task all`` run of two models through the console script."""
    out = tmp_path_factory.mktemp("compare") / "out"
    command = [
        sys.executable,
        "-m",
        "keras_lstm_variants",
        "compare",
        "--quick",
        "--task",
        "all",
        "--out",
        str(out),
    ]
    result = run_command([*command, "--variants", ",".join(MODELS)])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, result.stdout


def test_quick_prints_progress_and_a_table_per_task(quick_run):
    out, stdout = quick_run
    lengths = compare.PRESETS["adding"]["quick"]["lengths"]
    total = len(TASKS) * len(lengths) * len(MODELS)
    number = 0
    for task in TASKS:
        for length in compare.PRESETS[task]["quick"]["lengths"]:
            for model in MODELS:
                number += 1
                assert f"[{number}/{total}] {task} T={length} {model}, seed 0" in stdout
    assert number == total
    markdown = (out / "results.md").read_text()
    assert markdown.strip() in stdout
    for task in TASKS:
        assert f"## {task}" in markdown
    header = "| model | parameters | ms/step (T=10) | T=5 | T=10 |"
    assert markdown.count(header) == len(TASKS)
    for model in [*MODELS, "trivial predictor"]:
        assert markdown.count(f"| {model} |") == len(TASKS)


def test_quick_results_json_holds_every_run_and_its_summary(quick_run):
    out, _ = quick_run
    report = json.loads((out / "results.json").read_text())
    assert list(report["tasks"]) == list(TASKS)
    for name, entry in report["tasks"].items():
        task, settings = TASKS[name], entry["settings"]
        assert settings["variants"] == MODELS and settings["preset"] == "quick"
        assert len(entry["runs"]) == len(MODELS) * len(settings["lengths"])
        for run in entry["runs"]:
            model = compare.build_model(task, run["model"], settings["units"])
            assert run["parameters"] == model.count_params()
            steps = [point["step"] for point in run["history"]]
            every = settings["eval_every"]
            assert steps == list(range(every, every * len(steps) + 1, every))
            assert steps[-1] == settings["steps"] or run["solved_at_step"] == steps[-1]
            assert (run["loss"], run["metric"]) == (
                run["history"][-1]["loss"],
                run["history"][-1]["metric"],
            )
            assert (run["solved_at_step"] is not None) == task.solved(run["metric"])
        for row in entry["results"]:
            (run,) = [
                r
                for r in entry["runs"]
                if (r["model"], r["length"]) == (row["model"], row["length"])
            ]
            assert row["loss"] == row["min_loss"] == row["max_loss"] == run["loss"]
            assert row["solved"] == (run["solved_at_step"] is not None)


def test_quick_writes_the_plot(quick_run):
    out, _ = quick_run
    png = (out / "compare.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


def test_quick_logs_overlay_the_variants_on_one_tag_per_gate(quick_run):
    """Every model's layer is "rnn": the same tag in every variant's run (issue 15)."""
    out, _ = quick_run
    for task in TASKS:
        for length in compare.PRESETS[task]["quick"]["lengths"]:
            runs = out / "tensorboard" / f"{task}-T{length}"
            for model in MODELS:
                assert list((runs / model / "train").glob("events.out.tfevents.*"))
                held_out = _tags(runs / model / "held_out").Tags()["tensors"]
                assert "held_out/loss" in held_out
            gates = _tags(runs / "gru" / "gates").Tags()["tensors"]
            for gate in VARIANTS["gru"][0].gate_names:
                assert f"gates/{compare.LAYER_NAME}/{gate}/right_saturated" in gates
            assert not (runs / compare.BASELINE / "gates").exists()  # SimpleRNN has no gates


@pytest.mark.tensorflow_only("compare exports SavedModels on the TensorFlow backend only")
def test_quick_exports_the_longest_length_and_it_reproduces_the_score(quick_run):
    import tensorflow as tf

    out, _ = quick_run
    report = json.loads((out / "results.json").read_text())
    exported = sorted(
        os.path.relpath(root, out / "saved_models")
        for root, _, files in os.walk(out / "saved_models")
        if "saved_model.pb" in files
    )
    assert exported == sorted(f"{task}-T10/{model}" for task in TASKS for model in MODELS)
    for name, entry in report["tasks"].items():
        task = TASKS[name]
        x, y = compare.held_out(task, 10, seed=0)  # the sequences compare scored
        for model in MODELS:
            serve = tf.saved_model.load(str(out / "saved_models" / f"{name}-T10" / model))
            predicted = serve.signatures["serving_default"](tf.constant(x))["output"].numpy()
            loss, _ = task.score(predicted, y)
            (run,) = [r for r in entry["runs"] if (r["model"], r["length"]) == (model, 10)]
            assert loss == pytest.approx(run["loss"], rel=1e-4, abs=1e-6)


# ------------------------------------------------------------------ JAX, no TensorFlow
WITHOUT_TENSORFLOW = """
import sys
sys.modules["tensorflow"] = None  # `import tensorflow` fails, as where it is not installed
from keras_lstm_variants.commands.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_compare_runs_on_jax_without_tensorflow(tmp_path):
    pytest.importorskip("jax")
    out = tmp_path / "out"
    command = [sys.executable, "-c", WITHOUT_TENSORFLOW, "compare", "--quick", "--out", str(out)]
    command += ["--variants", "gru", "--lengths", "4", "--steps", "20", "--eval-every", "10"]
    env = {**ENV, "KERAS_BACKEND": "jax"}
    result = run_command(command, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "note: TensorFlow is not installed: no TensorBoard logs" in result.stdout
    assert "note: no SavedModel exports on this backend" in result.stdout
    report = json.loads((out / "results.json").read_text())
    (run,) = report["tasks"]["adding"]["runs"]
    assert report["tasks"]["adding"]["settings"]["backend"] == "jax"
    assert [point["step"] for point in run["history"]] == [10, 20] or run["solved_at_step"]
    assert (out / "compare.png").exists()
    assert not (out / "tensorboard").exists() and not (out / "saved_models").exists()


def test_export_without_tensorflow_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(compare_runs, "train_run", _must_not_train)
    monkeypatch.setattr(compare, "tensorflow_available", lambda: False)
    assert (
        cli.main(["compare", "--in-process", "--quick", "--export", "--out", str(tmp_path / "out")])
        == 2
    )
    assert "--export: SavedModel export needs TensorFlow" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- Ctrl-C
def test_ctrl_c_stops_cleanly_with_the_finished_runs(tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "keras_lstm_variants", "compare", "--quick", "--out", str(out)]
    command += ["--variants", "simplernn", "--lengths", "5,6,7,8,9", "--steps", "400"]
    command += ["--eval-every", "20", "--no-tensorboard", "--no-export"]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        # SIGINT as in a terminal, even where pytest runs as a background job (a shell starts
        # those with SIGINT ignored, the child inherits it, and Python then never raises
        # KeyboardInterrupt: the run would go on to the end).
        preexec_fn=functools.partial(signal.signal, signal.SIGINT, signal.SIG_DFL),
    )
    lines = []
    deadline = time.monotonic() + 900
    try:
        for line in process.stdout:  # wait until the first run has finished
            lines.append(line)
            if line.startswith("[1/5] adding T=5 simplernn, seed 0:"):
                break
            assert time.monotonic() < deadline, "".join(lines)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=600)
    finally:
        process.kill()
    assert process.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    message = [line for line in stderr.splitlines() if "compare: interrupted" in line]
    assert len(message) == 1 and "of 5 runs" in message[0]
    report = json.loads((out / "results.json").read_text())
    runs = report["tasks"]["adding"]["runs"]
    assert 1 <= len(runs) < 5 and runs[0]["length"] == 5
    assert "| simplernn |" in stdout  # the partial table


def test_results_are_written_after_every_run(tmp_path, monkeypatch):
    """A crash (here Ctrl-C on the third run) keeps the two runs that finished."""
    calls = []

    def fake_run(config, spec, length, seed, out, first_seed, **kwargs):
        calls.append((spec, length, seed, first_seed))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return {
            "model": spec,
            "length": length,
            "seed": seed,
            "parameters": 3,
            "ms_per_step": 1.0,
            "loss": 0.1 * len(calls),
            "metric": 0.1 * len(calls),
            "solved_at_step": None,
            "history": [{"step": 10, "loss": 0.1, "metric": 0.1}],
        }

    monkeypatch.setattr(compare_runs, "train_run", fake_run)
    arguments = ["compare", "--quick", "--variants", "lstm,gru", "--seeds", "2", "--seed", "7"]
    arguments.append("--in-process")  # the patched run is this process's
    code = cli.main([*arguments, "--out", str(tmp_path)])
    assert code == 130
    assert calls == [("lstm", 5, 7, True), ("gru", 5, 7, True), ("lstm", 10, 7, True)]
    runs = json.loads((tmp_path / "results.json").read_text())["tasks"]["adding"]["runs"]
    assert [(run["model"], run["loss"]) for run in runs] == [("lstm", 0.1), ("gru", 0.2)]
    assert "| lstm |" in (tmp_path / "results.md").read_text()


# ------------------------------------------------------------------------------ the parts
def test_summarize_takes_median_min_max_and_counts_solved_seeds():
    rng = np.random.default_rng(0)
    runs = []
    for seed in range(5):
        for length in (10, 50):
            solved_at = int(rng.integers(1, 10)) * 100 if rng.random() < 0.6 else None
            runs.append(
                {
                    "model": "lstm",
                    "length": length,
                    "seed": seed,
                    "parameters": 7,
                    "ms_per_step": float(seed + length),
                    "loss": float(rng.random()),
                    "metric": float(rng.random()),
                    "solved_at_step": solved_at,
                }
            )
    rows = {row["length"]: row for row in compare.summarize(runs)}
    for length, row in rows.items():
        mine = [run for run in runs if run["length"] == length]
        losses = sorted(run["loss"] for run in mine)
        assert (row["min_loss"], row["loss"], row["max_loss"]) == (losses[0], losses[2], losses[4])
        assert row["metric"] == sorted(run["metric"] for run in mine)[2]
        solved = [run["solved_at_step"] for run in mine if run["solved_at_step"] is not None]
        assert row["solved"] == len(solved) and row["seeds"] == 5
        assert row["steps_to_solve"] == (np.median(solved) if solved else None)
        assert row["ms_per_step"] == 2.0 + length


@pytest.mark.parametrize("name", sorted(TASKS))
def test_build_model_names_the_layer_rnn_and_puts_the_task_head_on_it(name):
    task = TASKS[name]
    for spec in ("cifg", compare.BASELINE):
        model = compare.build_model(task, spec, 4, learning_rate=0.02)
        assert float(model.optimizer.learning_rate) == pytest.approx(0.02)
        assert model.get_layer(compare.LAYER_NAME).units == 4
        x, y = task.data(6, 3, seed=0)
        predicted = np.asarray(model.predict_on_batch(x))
        assert predicted.shape == ((*y.shape, task.outputs) if task.per_step else y.shape)
        loss, _ = task.score(predicted, y)
        assert np.isfinite(loss)


def test_batches_are_the_same_for_every_model_and_new_each_step():
    task = TASKS["adding"]
    a = compare.Batches(task, [7], batch_size=4, steps=3, seed=1)
    b = compare.Batches(task, [7], batch_size=4, steps=3, seed=1)
    np.testing.assert_array_equal(a[2][0], b[2][0])
    assert not np.array_equal(a[0][0], a[1][0])
    first = a[0][0]
    a.on_epoch_end()  # the next epoch continues the stream
    assert not np.array_equal(a[0][0], first)
    np.testing.assert_array_equal(a[0][0], task.data(7, 4, seed=[1, 7, 0, 3])[0])
    held_out = compare.held_out(task, 7, seed=1)[0]
    assert not any(np.array_equal(held_out[:4], a[i][0]) for i in range(3))


def test_curriculum_cycles_the_lengths_up_to_t():
    task = TASKS["agreement"]
    batches = compare.Batches(task, [5, 20, 50], batch_size=2, steps=6, seed=0)
    assert [batches[i][0].shape[1] - 2 for i in range(6)] == [5, 20, 50, 5, 20, 50]


def test_variants_accept_specs_all_and_greff(monkeypatch):
    assert compare.parse_variants("lstm, gru,lstm") == ["lstm", "gru"]
    assert compare.parse_variants("all") == [*VARIANTS, compare.BASELINE]
    assert compare.parse_variants("simplernn,LSTM") == [compare.BASELINE, "lstm"]
    if "greff" in VARIANTS:  # a Greff variant keeps its paper's name, in capitals
        assert compare.parse_variants("Greff:NIG+layer_norm") == ["greff:NIG+layer_norm"]
    import keras_lstm_variants as klv

    monkeypatch.setattr(klv, "GREFF_VARIANTS", ("V", "NIG"), raising=False)
    monkeypatch.setitem(VARIANTS, "greff", VARIANTS["lstm"])  # stands in for GreffLSTM
    assert compare.parse_variants("greff,gru") == ["greff:V", "greff:NIG", "gru"]


# --------------------------------------------------------------------------- bad input
def _must_not_train(*args, **kwargs):
    raise AssertionError("training started despite bad input")


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--variants", "lstm,foo"], "--variants: 'foo'"),
        (["--variants", ","], "--variants: no model given"),
        (["--variants", "lstm+no_such_option=3"], "--variants: 'lstm+no_such_option=3'"),
        (["--lengths", ""], "--lengths"),
        (["--distances", "5,0"], "--lengths"),
        (["--lengths", "5,abc"], "--lengths"),
        (["--lengths", "1"], "--lengths: expected comma-separated integers from 2"),
        (["--lengths", str(compare.MAX_LENGTH + 1)], "--lengths"),
        (["--steps", "0"], "--steps"),
        (["--steps", "10", "--eval-every", "20"], "--eval-every: 20 is more than --steps 10"),
        (["--steps", "1500", "--eval-every", "400"], "--steps: 1500 is not a multiple of"),
        (["--units", "-1"], "--units"),
        (["--batch-size", "0"], "--batch-size"),
        (["--seeds", "0"], "--seeds"),
        (["--seed", "-1"], "--seed: must be an integer from 0 to 4294967295; received -1"),
        (["--seed", "4294967295", "--seeds", "2"], "--seeds: seeds 4294967295 to 4294967296"),
        (["--task", "Adding "], "--task: unknown task 'Adding '; choose from adding, copy"),
        (["--curriculum"], "--curriculum: only the agreement task"),
        (["--learning-rate", "0"], "--learning-rate"),
        (["--learning-rate", "nan"], "--learning-rate"),
        *TRIAL_OPTION_REFUSALS,
    ],
)
def test_bad_arguments_exit_2_before_training(arguments, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(compare_runs, "train_run", _must_not_train)
    command = ["compare", "--in-process", "--out", str(tmp_path / "out"), *arguments]
    assert_refused(command, message, capsys)
    assert not (tmp_path / "out").exists()  # nothing written before the checks


def test_seed_at_the_top_of_the_range_is_accepted(tmp_path, monkeypatch, capsys):
    """The settings pass: training starts (and, stubbed here, fails: one line, exit 1)."""
    monkeypatch.setattr(compare_runs, "train_run", _must_not_train)
    argv = ["compare", "--in-process", "--seed", str(2**32 - 1), "--seeds", "1"]
    assert cli.main([*argv, "--out", str(tmp_path)]) == 1
    assert "FAILED: AssertionError: training started" in capsys.readouterr().out


def test_unknown_task_exits_2_without_traceback_in_a_subprocess(tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "keras_lstm_variants", "compare", "--task", "parity"]
    result = run_command([*command, "--out", str(out)])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--task: unknown task 'parity'" in result.stderr
    assert not out.exists()


def test_unwritable_out_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(compare_runs, "train_run", _must_not_train)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    for out in (blocker, blocker / "sub"):
        assert cli.main(["compare", "--in-process", "--quick", "--out", str(out)]) == 2
        error = capsys.readouterr().err
        assert "--out: cannot write to" in error and str(out) in error


def test_missing_matplotlib_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(compare_runs, "train_run", _must_not_train)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    assert cli.main(["compare", "--in-process", "--quick", "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "needs matplotlib" in error and "keras-lstm-variants[examples]" in error


# ------------------------------------------------------------- specs at the run's units
def _settings(*argv):
    return compare.settings(cli.build_parser().parse_args(["compare", *argv]))


def test_specs_are_validated_at_the_units_of_the_run():
    """A spec whose option depends on the units (``num_heads`` must divide them) is checked
    at the units the run uses, not at a stand-in size: 4 heads divide 8 units."""
    (config,) = _settings("--variants", "slstm+num_heads=4,lstm", "--units", "8", "--quick")
    assert config["variants"] == ["slstm+num_heads=4", "lstm"] and config["units"] == 8
    # the preset's units count too (--quick: 8)
    (config,) = _settings("--variants", "mlstm+num_heads=4", "--quick")
    assert config["units"] == 8


def test_a_spec_that_does_not_fit_the_units_fails_before_training_naming_it():
    with pytest.raises(cli.UsageError, match=r"'slstm\+num_heads=3' at 8 units.*num_heads"):
        _settings("--variants", "lstm,slstm+num_heads=3", "--units", "8", "--quick")


# ----------------------------------------------------------- nothing lost after training
TINY_RUN = ["--quick", "--task", "adding", "--steps", "10", "--eval-every", "10"]


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="export needs TensorFlow")
def test_export_over_a_half_written_saved_model_fails_before_training(tmp_path):
    """What an interrupted export leaves (``variables/`` without ``saved_model.pb``) is found
    before any training: one line naming the directory, exit code 2, nothing trained."""
    out = tmp_path / "out"
    partial = out / "saved_models" / "adding-T5" / "lstm"
    (partial / "variables").mkdir(parents=True)
    (partial / "variables" / "variables.index").write_bytes(b"\0")
    command = [sys.executable, "-m", "keras_lstm_variants", "compare", *TINY_RUN]
    command += ["--lengths", "5", "--variants", "lstm", "--export", "--out", str(out)]
    result = run_command(command, timeout=600)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    (line,) = [line for line in result.stderr.splitlines() if "compare: error" in line]
    assert str(partial) in line and "saved_model.pb" in line
    assert "Traceback" not in result.stderr and "[1/1]" not in result.stdout
    assert not (out / "results.json").exists()


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="export needs TensorFlow")
def test_a_failure_after_training_is_recorded_and_the_runs_go_on(tmp_path, monkeypatch, capsys):
    """An export that fails after training (here: a full disk) costs neither that run nor the
    next: each run reaches results.json with the failure, one line each, exit code 1."""
    import keras_lstm_variants.export as export

    def full_disk(model, path, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export, "export_saved_model", full_disk)
    out = tmp_path / "out"
    argv = ["compare", *TINY_RUN, "--lengths", "5", "--variants", "lstm,gru", "--export"]
    argv += ["--no-tensorboard", "--in-process", "--out", str(out)]
    assert cli.main(argv) == 1
    stdout = capsys.readouterr().out
    runs = json.loads((out / "results.json").read_text())["tasks"]["adding"]["runs"]
    assert [run["model"] for run in runs] == ["lstm", "gru"]
    for run in runs:
        assert run["failures"] == [
            {"stage": "export", "error": "OSError: [Errno 28] No space left on device"}
        ]
        assert np.isfinite(run["loss"])
    failed = [line for line in stdout.splitlines() if "export failed" in line]
    assert len(failed) == 2 and all("No space left on device" in line for line in failed)
    assert not list((out / "saved_models").rglob("*.partial-*"))
