"""The command's shell: TensorFlow's C++ start-up logging is quiet unless the user asks."""

import os
import subprocess
import sys

import pytest

from keras_lstm_variants import cli

#: What TensorFlow 2.21 writes to stderr while it loads and looks for devices on a CPU machine.
STARTUP_LOG = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    "I0000 00:00:1795333548.290726    8390 port.cc:153] oneDNN custom operations are on.\n"
    "I0000 00:00:1795333543.291408    8390 cudart_stub.cc:31] Could not find cuda drivers on "
    "your machine, GPU will not be used.\n"
    "I0000 00:00:1795333543.793250    8390 cpu_feature_guard.cc:227] This TensorFlow binary is "
    "optimized to use available CPU instructions in performance-critical operations.\n"
    "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow.\n"
    "W0000 00:00:1795333543.793250    8390 something.cc:12] a warning\n"
    "/x/y.py:3: UserWarning: a Python warning\n"
    "  warnings.warn('a Python warning')\n"
    "E0000 00:00:1795333558.528799    8390 cuda_platform.cc:52] failed call to cuInit: INTERNAL\n"
)


@pytest.mark.parametrize(
    "level, kept",
    [
        (0, None),  # everything
        (1, ["W0000", "/x/y.py:3: UserWarning", "  warnings.warn", "E0000"]),
        (2, ["/x/y.py:3: UserWarning", "  warnings.warn", "E0000"]),
        (3, ["/x/y.py:3: UserWarning", "  warnings.warn"]),
    ],
)
def test_filter_log_keeps_records_at_the_level_and_everything_else(level, kept):
    lines = cli.filter_log(STARTUP_LOG, level).splitlines()
    if kept is None:
        assert lines == STARTUP_LOG.splitlines()
    else:
        assert [line[: len(prefix)] for line, prefix in zip(lines, kept, strict=True)] == kept


def test_running_as_the_command(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/venv/bin/keras-lstm-variants", "bench"])
    assert cli.running_as_the_command()
    monkeypatch.setattr(sys, "argv", ["-m"])
    monkeypatch.setattr(sys, "orig_argv", ["python", "-m", "keras_lstm_variants", "bench"])
    assert cli.running_as_the_command()
    monkeypatch.setattr(sys, "argv", ["/venv/bin/pytest"])
    monkeypatch.setattr(sys, "orig_argv", ["python", "-m", "pytest", "tests"])
    assert not cli.running_as_the_command()


def test_the_command_starts_without_tensorflow_logging(tmp_path):
    """No absl record on stderr by default (TensorFlow writes several while it loads)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["KERAS_BACKEND"] = "tensorflow"
    result = subprocess.run(
        ["keras-lstm-variants", "bench", "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "usage: keras-lstm-variants bench" in result.stdout
    assert result.stderr == ""


class Raising:
    """A stand-in sub-command whose run raises ``error``."""

    def __init__(self, error):
        self.error = error

    def configure(self, parser):
        pass

    def run(self, args):
        raise self.error


@pytest.mark.parametrize(
    "error, code, message",
    [
        (
            cli.UsageError("--seed must be >= 0"),
            2,
            "keras-lstm-variants fake: error: --seed must be >= 0",
        ),
        (KeyboardInterrupt(), 130, "keras-lstm-variants fake: interrupted"),
    ],
    ids=["usage", "ctrl-c"],
)
def test_errors_end_in_one_line_and_an_exit_code(monkeypatch, capsys, error, code, message):
    monkeypatch.setitem(sys.modules, "fake_command", Raising(error))
    monkeypatch.setattr(cli, "COMMANDS", {"fake": ("fake_command", "a stand-in")})
    assert cli.main(["fake"]) == code
    assert capsys.readouterr().err.strip() == message
