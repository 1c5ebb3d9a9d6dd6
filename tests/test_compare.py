"""``keras-lstm-variants compare`` end to end, its bad-input errors, and the task's labels."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from keras_lstm_variants import VARIANTS, cli, compare
from keras_lstm_variants.tasks import (
    OBJECTS,
    SUBJECTS,
    TASKS,
    VOCABULARY,
    agreement_data,
    decode,
)

ALL = [*VARIANTS, compare.BASELINE]
AGREEMENT = TASKS["agreement"]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}


def run_command(command, timeout=600):
    return subprocess.run(
        command, capture_output=True, text=True, env=ENV, timeout=timeout, check=False
    )


# --------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One ``--quick`` run of every model through the console script."""
    out = tmp_path_factory.mktemp("compare") / "out"
    result = run_command(["keras-lstm-variants", "compare", "--quick", "--out", str(out)])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, result.stdout


def test_quick_prints_the_table_and_progress(quick_run):
    out, stdout = quick_run
    for number, name in enumerate(ALL, 1):
        assert f"[{number}/{len(ALL)}] {name}, seed 0" in stdout  # progress
        assert "Epoch 2/2" in stdout
    table = (out / "results.md").read_text()
    assert table.strip() in stdout
    assert table.splitlines()[0] == (
        "| variant | parameters | s/epoch | learned (>= 95%) in seeds | d=5 | d=20 |"
    )
    assert stdout.count("held-out accuracy: d=5: ") == 2 * len(ALL)
    assert [line.split("|")[1].strip() for line in table.splitlines()[2:]] == ALL


def test_quick_results_json_matches_the_models(quick_run):
    out, _ = quick_run
    results = json.loads((out / "results.json").read_text())["results"]
    units = compare.PRESETS["quick"]["units"]
    for row in results:
        model = compare.build_model(row["variant"], units, len(VOCABULARY))
        assert row["parameters"] == model.count_params()
        assert set(row["accuracy"]) == {"5", "20"}
        assert row["seeds"] == len(row["runs"]) == 1 and row["runs"][0]["seed"] == 0
        assert row["min"] == row["accuracy"] == row["max"] == row["runs"][0]["accuracy"]
        # Accuracies are fractions of TEST_SIZE sentences.
        for accuracy in row["accuracy"].values():
            assert 0 <= accuracy <= 1 and (accuracy * compare.TEST_SIZE) % 1 < 1e-6
        assert row["seconds_per_epoch"] > 0
        assert row["runs"][0]["learned_at_epoch"] in (None, 1, 2)
        assert row["learned"] == (row["runs"][0]["learned_at_epoch"] is not None)


def test_learned_at_is_the_first_epoch_good_at_every_distance():
    callback = compare.HeldOutAccuracy(AGREEMENT, [5, 50], seed=0)
    callback.history = [{5: 0.99, 50: 0.6}, {5: 0.96, 50: 0.95}, {5: 1.0, 50: 1.0}]
    assert callback.learned_at() == 2
    callback.history = [{5: 1.0, 50: 0.949}]
    assert callback.learned_at() is None


def test_quick_writes_the_plot(quick_run):
    out, _ = quick_run
    png = (out / "accuracy_vs_distance.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


def _tags(directory):
    accumulator = EventAccumulator(str(directory), size_guidance={"tensors": 0, "scalars": 0})
    accumulator.Reload()
    return accumulator


def test_quick_writes_tensorboard_logs_with_gate_statistics(quick_run):
    import tensorflow as tf

    out, _ = quick_run
    for name in ALL:
        run = out / "tensorboard" / name
        assert list((run / "train").glob("events.out.tfevents.*"))
        final = _tags(run / "test").Tensors("test/accuracy_by_distance")
        assert [event.step for event in final] == [5, 20]
        per_epoch = _tags(run / "held_out").Tensors("held_out/accuracy_d20")
        assert [event.step for event in per_epoch] == [0, 1]
        assert tf.make_ndarray(per_epoch[-1].tensor_proto) == pytest.approx(
            tf.make_ndarray(final[-1].tensor_proto)
        )
        gates = run / "gates"
        if name == compare.BASELINE:
            assert not gates.exists()  # SimpleRNN has no gates
            continue
        tags = _tags(gates).Tags()["tensors"]
        cell = VARIANTS[name][0]
        for gate in cell.gate_names:
            assert f"gates/{name}/{gate}/mean" in tags
            assert f"gates/{name}/{gate}/right_saturated" in tags


def test_quick_exports_models_that_load_and_agree_with_the_table(quick_run):
    import tensorflow as tf

    out, _ = quick_run
    results = {
        row["variant"]: row for row in json.loads((out / "results.json").read_text())["results"]
    }
    x, y = compare.held_out(AGREEMENT, 5, seed=0)  # the sentences compare scored
    for name in ALL:
        path = out / "saved_models" / name
        assert (path / "saved_model.pb").exists()
        serve = tf.saved_model.load(str(path)).signatures["serving_default"]
        probabilities = serve(tf.constant(x))["output"].numpy()
        assert probabilities.shape == (len(x), 1) and np.all(
            (0 < probabilities) & (probabilities < 1)
        )
        # The trained model's accuracy; a prediction within float rounding of 0.5 may flip.
        accuracy = np.mean((probabilities[:, 0] > 0.5) == y)
        borderline = np.sum(np.abs(probabilities - 0.5) < 1e-5)
        expected = results[name]["accuracy"]["5"]
        assert abs(accuracy - expected) <= borderline / len(x) + 1e-9


def test_python_dash_m_runs_compare_over_seeds_logging_the_first(tmp_path):
    out = tmp_path / "out"
    result = run_command(
        [
            sys.executable,
            "-m",
            "keras_lstm_variants",
            "compare",
            "--quick",
            "--variants",
            "cifg",
            "--distances",
            "6",
            "--epochs",
            "1",
            "--seeds",
            "2",
            "--seed",
            "3",
            "--learning-rate",
            "0.02",
            "--out",
            str(out),
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[1/2] cifg, seed 3" in result.stdout and "[2/2] cifg, seed 4" in result.stdout
    assert "| cifg |" in result.stdout
    document = json.loads((out / "results.json").read_text())
    assert document["settings"]["learning_rate"] == 0.02
    (row,) = document["results"]
    assert [run["seed"] for run in row["runs"]] == [3, 4] and row["seeds"] == 2
    accuracies = [run["accuracy"]["6"] for run in row["runs"]]
    assert row["accuracy"]["6"] == pytest.approx(np.median(accuracies))
    assert (row["min"]["6"], row["max"]["6"]) == (min(accuracies), max(accuracies))
    # TensorBoard logs and the export of the first seed only: one held-out event, at epoch 0.
    assert [
        e.step
        for e in _tags(out / "tensorboard" / "cifg" / "held_out").Tensors("held_out/accuracy_d6")
    ] == [0]
    assert (out / "saved_models" / "cifg" / "saved_model.pb").exists()
    assert sorted(os.listdir(out / "saved_models")) == ["cifg"]


def test_summarize_takes_median_min_max_and_counts_learned_seeds():
    rng = np.random.default_rng(0)
    distances = [5, 50]
    runs = []
    for seed in range(5):
        accuracy = dict(zip(distances, rng.uniform(0.9, 1.0, size=2).tolist()))
        learned = 1 if min(accuracy.values()) >= compare.LEARNED else None
        runs.append(
            {
                "seed": seed,
                "parameters": 7,
                "seconds_per_epoch": seed + 1.0,
                "learned_at_epoch": learned,
                "accuracy": accuracy,
            }
        )
    row = compare.summarize("lstm", runs, distances)
    for d in distances:
        values = sorted(run["accuracy"][d] for run in runs)
        assert (row["min"][d], row["accuracy"][d], row["max"][d]) == (
            values[0],
            values[2],
            values[4],
        )
    assert row["learned"] == sum(min(run["accuracy"].values()) >= 0.95 for run in runs)
    assert 0 < row["learned"] < 5  # this draw has both kinds of seed
    assert (row["seconds_per_epoch"], row["seeds"], row["parameters"]) == (3.0, 5, 7)


def test_build_model_uses_the_learning_rate():
    model = compare.build_model("gru", 4, len(VOCABULARY), learning_rate=0.02)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.02)
    assert model.input_shape == (None, None, len(VOCABULARY))


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "option, value", [("--variants", "lstm,transformer"), ("--task", "parity")]
)
def test_unknown_variant_or_task_exits_2_without_traceback_in_a_subprocess(option, value, tmp_path):
    result = run_command(
        [
            sys.executable,
            "-m",
            "keras_lstm_variants",
            "compare",
            option,
            value,
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert option in result.stderr and repr(value.split(",")[-1]) in result.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--variants", "lstm,foo"], "--variants: unknown variant 'foo'"),
        (["--variants", ","], "--variants"),
        (["--distances", "5,0"], "--distances"),
        (["--distances", "5,abc"], "--distances"),
        (["--distances", "-3"], "--distances"),
        (["--distances", str(compare.MAX_DISTANCE + 1)], "--distances"),
        (["--epochs", "0"], "--epochs"),
        (["--units", "-1"], "--units"),
        (["--seeds", "0"], "--seeds"),
        (["--task", "Agreement "], "--task: unknown task 'Agreement '; choose from agreement"),
        (["--learning-rate", "0"], "--learning-rate"),
        (["--learning-rate", "nan"], "--learning-rate"),
    ],
)
def test_bad_arguments_exit_2_before_training(arguments, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(compare, "train_variant", _must_not_train)
    code = cli.main(["compare", "--out", str(tmp_path / "out"), *arguments])
    error = capsys.readouterr().err
    assert code == 2
    assert message in error and "Traceback" not in error


def _must_not_train(*args):
    raise AssertionError("training started despite bad input")


def test_unwritable_out_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(compare, "train_variant", _must_not_train)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    for out in (blocker, blocker / "sub"):
        assert cli.main(["compare", "--quick", "--out", str(out)]) == 2
        error = capsys.readouterr().err
        assert "--out: cannot write to" in error and str(out) in error


def test_missing_matplotlib_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(compare, "train_variant", _must_not_train)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    assert cli.main(["compare", "--quick", "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "needs matplotlib" in error and "keras-lstm-variants[examples]" in error


# ------------------------------------------------------------------------------- the task
SINGULAR = {pair[0] for pair in SUBJECTS + OBJECTS}
PLURAL = {pair[1] for pair in SUBJECTS + OBJECTS}


def read(x):
    """Each sentence's words, and its nouns' numbers (1 plural, 0 singular, -1 not a noun)."""
    words = np.array([decode(sentence) for sentence in x])
    numbers = np.where(np.isin(words, sorted(PLURAL)), 1, -1)
    return words, np.where(np.isin(words, sorted(SINGULAR)), 0, numbers)


@pytest.mark.parametrize("distance", [1, 2, 5, 37])
def test_labels_agree_with_the_subject(distance):
    """An independent reading of each sentence, word by word, gives the generator's labels."""
    x, y = agreement_data(distance, 64, seed=distance)
    assert x.shape == (64, distance + 2, len(VOCABULARY))
    assert np.all(x.sum(-1) == 1)  # one-hot
    words, numbers = read(x)
    for sentence, label in zip(words, y):
        subject = sentence[0]
        assert subject in {"cat", "cats", "dog", "dogs"} and sentence[-1] == ","
        assert label == (subject in PLURAL)
        assert subject.endswith("s") == bool(label)  # "cats" / "dogs" are plural
    clause = numbers[:, 1:-1]
    assert np.all((clause >= 0).any(1))  # every clause has a noun
    if distance > 1:  # ... of both numbers: an agreement attractor, whatever the subject
        assert np.all((clause == 0).any(1) & (clause == 1).any(1))
    assert 0.3 < y.mean() < 0.7


def test_the_clause_does_not_give_the_label_away():
    """Subject nouns recur in the clause; the last noun, the majority of nouns and the
    frequency of every word in the clause are independent of the label."""
    x, y = agreement_data(50, 2048, seed=1)
    words, numbers = read(x)
    clause_words, clause = words[:, 1:-1], numbers[:, 1:-1]
    assert np.isin(clause_words, ["cat", "cats", "dog", "dogs"]).any(1).mean() > 0.5
    last_noun = np.array([row[row >= 0][-1] for row in clause])
    assert 0.45 < np.mean(last_noun == y) < 0.55
    majority = (clause == 1).sum(1) > (clause == 0).sum(1)
    assert 0.45 < np.mean(majority == y) < 0.55
    for word in VOCABULARY:
        share = [np.mean(clause_words[y == label] == word) for label in (0, 1)]
        assert abs(share[0] - share[1]) < 0.01, word


def test_same_seed_same_sentences_and_bad_arguments():
    a, b, c = (agreement_data(5, 8, seed=s) for s in (3, 3, 4))
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="`distance`"):
            agreement_data(bad, 8, seed=0)
    with pytest.raises(ValueError, match="`size`"):
        agreement_data(5, 0, seed=0)
