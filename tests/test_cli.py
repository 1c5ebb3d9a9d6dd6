"""The command's shell: TensorFlow's C++ start-up logging is quiet unless the user asks, and
importing the package leaves the process alone (no command module, no stderr redirection)."""

import json
import os
import subprocess
import sys

import pytest

import keras_lstm_variants_launcher as launcher
from keras_lstm_variants.commands import cli

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
    lines = launcher.filter_log(STARTUP_LOG, level).splitlines()
    if kept is None:
        assert lines == STARTUP_LOG.splitlines()
    else:
        assert [line[: len(prefix)] for line, prefix in zip(lines, kept, strict=True)] == kept


#: Runs the console entry point as pip's generated ``keras-lstm-variants`` script does.
CONSOLE_SCRIPT = (
    "import sys; sys.argv[0] = 'keras-lstm-variants'; "
    "from keras_lstm_variants_launcher import main; sys.exit(main())"
)


def test_the_command_starts_without_tensorflow_logging(tmp_path):
    """No absl record on stderr by default (TensorFlow writes several while it loads)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["KERAS_BACKEND"] = "tensorflow"
    result = subprocess.run(
        [sys.executable, "-c", CONSOLE_SCRIPT, "bench", "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "usage: keras-lstm-variants bench" in result.stdout
    assert result.stderr == ""


#: Imports the package and reports what changed: command modules loaded, fd 2 replaced, the
#: logging set-up. (TensorFlow itself sets TF_CPP_MIN_LOG_LEVEL while it loads.)
IMPORT_PROBE = """
import json, logging, os, sys
before = os.fstat(2)
handlers, level = list(logging.getLogger().handlers), logging.getLogger().level
sys.argv[0] = "keras-lstm-variants"  # even where the process looks like the command
import keras_lstm_variants
after = os.fstat(2)
print(json.dumps({
    "commands": sorted(
        m for m in sys.modules
        if m.split(".")[:2][-1] in ("commands", "cli", "compare", "bench", "tasks", "specs")
        and m.startswith("keras_lstm_variants.")
    ),
    "launcher": "keras_lstm_variants_launcher" in sys.modules,
    "fd2": [before.st_dev, before.st_ino] == [after.st_dev, after.st_ino],
    "logging": [list(logging.getLogger().handlers), logging.getLogger().level]
    == [handlers, level],
}))
"""


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_importing_the_package_changes_nothing_in_the_process(tmp_path, backend):
    """``import keras_lstm_variants`` loads no command module and leaves fd 2 (stderr), the
    logging set-up as they were, also when argv[0] names the
    command; stderr goes to a file here, so a redirection would show as another inode."""
    pytest.importorskip(backend)
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["KERAS_BACKEND"] = backend
    with open(tmp_path / "stderr", "w") as stderr:
        result = subprocess.run(
            [sys.executable, "-c", IMPORT_PROBE],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            timeout=300,
        )
    assert result.returncode == 0, (tmp_path / "stderr").read_text()[-2000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found == {"commands": [], "launcher": False, "fd2": True, "logging": True}


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
