"""The real-data examples: each ``--quick`` mode runs in a subprocess and prints its table.

The subprocesses start together (one module-scoped fixture) and each test waits for its own,
so the slow part, importing TensorFlow and tracing the models, overlaps. Where an example's
numbers can be recomputed independently (the naive forecast, parameter counts, the piano roll
against music21's own offset query), the test does so.
"""

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
UNIFORM_NLL = 88 * math.log(2)  # p = 0.5 for every one of 88 notes

# name -> (script, extra arguments); the variant subsets keep the suite fast while every
# variant runs in at least one example (timing compares the peephole pair, as in the paper).
RUNS = {
    "forecast": ("forecast_weather.py", ["--variants", "cifg,gru"]),
    "vowels": ("classify_vowels.py", ["--variants", "gru"]),
    "chorales": ("chorales.py", ["--variants", "cifg"]),
    "timing": ("timing.py", ["--variants", "lstm,peephole"]),
    "bad_variant": ("timing.py", ["--variants", "lstm,nope"]),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}
    cache = tmp_path_factory.mktemp("cache")
    started = {}
    for name, (script, extra) in RUNS.items():
        arguments = [sys.executable, str(EXAMPLES / script), "--quick", *extra]
        if name == "chorales":
            arguments += ["--cache", str(cache)]
        started[name] = subprocess.Popen(
            arguments, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
    yield {name: _Run(process) for name, process in started.items()}
    for process in started.values():
        process.kill()


class _Run:
    def __init__(self, process):
        self.process = process
        self._result = None

    def result(self):
        """(exit code, stdout, stderr), waiting for the process."""
        if self._result is None:
            out, err = self.process.communicate(timeout=600)
            self._result = self.process.returncode, out, err
        return self._result

    def table(self):
        """The printed Markdown table: {model: {column: value}}, numbers as floats."""
        code, out, err = self.result()
        assert code == 0, err[-3000:]
        lines = [line for line in out.splitlines() if line.startswith("|")]
        header = [cell.strip() for cell in lines[0].strip("|").split("|")]
        assert set(lines[1]) <= set("|-")
        table = {}
        for line in lines[2:]:
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            assert len(cells) == len(header), line
            table[cells[0]] = {
                key: _number(value) for key, value in zip(header[1:], cells[1:], strict=True)
            }
        return table


def _number(text):
    return text if text == "-" else float(text)


def _gated_params(units, features, blocks=4, peepholes=0):
    """Parameters of a recurrent layer: fused kernel, recurrent kernel, bias, peepholes."""
    return blocks * units * (features + units + 1) + peepholes * units


def test_forecast_recomputes_the_naive_baseline_and_parameter_counts(runs):
    from vega_datasets import local_data

    table = runs["forecast"].table()
    assert list(table) == ["naive last value", "cifg", "gru"]
    weather = local_data.seattle_weather()
    high = weather["temp_max"].to_numpy()
    in_2015 = (weather["date"].dt.year == 2015).to_numpy()
    naive_error = (high[1:] - high[:-1])[in_2015[1:]]
    assert table["naive last value"]["MAE"] == pytest.approx(np.abs(naive_error).mean(), rel=1e-3)
    assert table["naive last value"]["RMSE"] == pytest.approx(
        np.sqrt(np.mean(naive_error**2)), rel=1e-3
    )
    units, features = 8, 4  # --quick
    dense = units + 1
    expected = {
        "cifg": _gated_params(units, features, blocks=3),
        "gru": 3 * units * (features + units + 2),  # reset_after: two bias rows
    }
    for name, params in expected.items():
        row = table[name]
        assert row["params"] == params + dense
        assert row["epochs"] == 2
        assert 0 < row["MAE"] <= row["RMSE"] < 30  # RMSE >= MAE always; 30 C is no forecast


def test_vowels_bidirectional_masked_beats_chance(runs):
    table = runs["vowels"].table()
    assert list(table) == ["chance (majority class)", "Bidirectional(gru)"]
    chance = table["chance (majority class)"]["accuracy"]
    assert 1 / 9 <= chance < 0.5
    row = table["Bidirectional(gru)"]
    assert row["params"] == 2 * 3 * 8 * (12 + 8 + 2) + (2 * 8 + 1) * 9
    assert chance < row["accuracy"] <= 1


def test_chorales_nll_is_a_summed_bernoulli_nll(runs):
    code, out, _ = runs["chorales"].result()
    assert code == 0
    assert "parsed" in out
    table = runs["chorales"].table()
    assert list(table) == ["note frequencies", "cifg"]
    for row in table.values():
        assert 0 < row["NLL"] < UNIFORM_NLL
    assert table["cifg"]["params"] == _gated_params(8, 88, blocks=3) + 9 * 88


def test_timing_reports_exact_share_and_error(runs):
    table = runs["timing"].table()
    assert list(table) == ["lstm", "peephole"]
    dense = 8 + 1
    assert table["lstm"]["params"] == _gated_params(8, 2) + dense
    assert table["peephole"]["params"] == _gated_params(8, 2, peepholes=3) + dense
    for row in table.values():
        assert 0 <= row["exact"] <= 1 and row["MAE (steps)"] >= 0


def test_unknown_variant_is_one_message_and_exit_2(runs):
    code, _, err = runs["bad_variant"].result()
    assert code == 2
    assert "--variants" in err and "nope" in err and "Traceback" not in err


@pytest.fixture(scope="module")
def examples_on_path():
    sys.path.insert(0, str(EXAMPLES))
    yield
    sys.path.remove(str(EXAMPLES))


@pytest.mark.parametrize("task", ["gts", "msd"])
def test_timing_score_is_exact_for_the_target_and_counts_misses(examples_on_path, task):
    import timing

    rng = np.random.default_rng(3)
    _, target, _, t1, delay = timing.spikes(task, 6, 5, 12, rng)
    perfect = target[..., 0]
    assert timing.score(task, perfect, t1, delay, 12) == (1.0, 0.0)
    late = np.roll(perfect, 2, axis=1)  # every answer two steps late
    exact, error = timing.score(task, late, t1, delay, 12)
    assert exact == 0.0 and error > 0


def test_unwritable_cache_is_an_argument_error(examples_on_path, tmp_path):
    import argparse

    import chorales

    assert chorales.writable_dir(str(tmp_path / "new")) == tmp_path / "new"
    with pytest.raises(argparse.ArgumentTypeError, match="cannot write to '/proc/x'"):
        chorales.writable_dir("/proc/x")


def test_piano_roll_matches_music21_offset_query_and_cache(examples_on_path, tmp_path, capsys):
    import chorales
    from music21 import corpus

    names = chorales.split(3)[0][:1]
    rolls = chorales.load_rolls(names, 1.0, tmp_path)
    again = chorales.load_rolls(names, 1.0, tmp_path)
    first, second = capsys.readouterr().out.splitlines()
    assert "1 parsed" in first and "0 parsed" in second
    np.testing.assert_array_equal(rolls[0], again[0])
    notes = corpus.parse(names[0]).flatten().notes
    for step in range(0, len(rolls[0]), 7):
        sounding = notes.getElementsByOffset(
            step, mustBeginInSpan=False, includeElementsThatEndAtStart=False
        )
        pitches = {p.midi for n in sounding if n.quarterLength > 0 for p in n.pitches}
        assert set(np.flatnonzero(rolls[0][step]) + 21) == pitches, step


def test_chorale_nll_matches_the_bernoulli_formula(examples_on_path):
    import chorales

    rng = np.random.default_rng(5)
    logits = rng.normal(0, 3, (3, 6, 88))
    target = (rng.random((3, 6, 88)) < 0.1).astype("float64")
    weight = (np.arange(6) < np.array([[6], [4], [1]])).astype("float64")
    p = 1 / (1 + np.exp(-logits))
    per_step = -np.sum(target * np.log(p) + (1 - target) * np.log(1 - p), axis=-1)
    expected = np.sum(per_step * weight) / np.sum(weight)
    assert chorales.nll_per_step(logits, target, weight) == pytest.approx(expected, rel=1e-9)
    loss = np.asarray(chorales.summed_bce(target, logits))  # the training loss, per step
    np.testing.assert_allclose(loss, per_step, rtol=1e-5)
