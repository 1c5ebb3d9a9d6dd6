"""The ``keras-lstm-variants`` console command's launcher, outside the package on purpose.

Importing :mod:`keras_lstm_variants` loads Keras, and Keras loads TensorFlow, which writes its
C++ start-up log lines (oneDNN, the cudart stub, the CPU feature guard, cuInit) to the
process's stderr as it loads. The command quiets them, so it must act before the package is
imported: Python imports a package before any module inside it, so the console entry point
lives here, in a module that imports nothing of the package until TensorFlow is loaded.
``import keras_lstm_variants`` itself changes nothing in the process.
"""

import os
import re
import sys
import tempfile

#: absl's log line: severity (Info, Warning, Error, Fatal), date, time, thread, file:line.
_LOG_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ \S+:\d+\] ")
_LOG_BANNER = "WARNING: All log messages before absl::InitializeLog() is called"
#: A Python warning line (``file:line: SomeWarning: ...``): never part of a log record.
_PYTHON_WARNING = re.compile(r"^\S.*:\d+: \w*Warning: ")
#: Below this level nothing TensorFlow logs while it loads shows, unless the user set
#: TF_CPP_MIN_LOG_LEVEL (then that level applies): 3 hides its start-up info, warnings and the
#: "failed call to cuInit" error every machine without a GPU logs.
STARTUP_LOG_LEVEL = 3
#: TF_CPP_MIN_LOG_LEVEL for the rest of the run when the user set none: errors only.
RUN_LOG_LEVEL = "2"


def quiet_tensorflow():
    """Load Keras's backend (and find TensorFlow's devices) with TensorFlow's C++ start-up
    logging filtered out of stderr: the cudart stub, CPU feature guard, oneDNN and cuInit lines
    that TF_CPP_MIN_LOG_LEVEL alone does not silence, since TensorFlow writes them before its
    logging reads the variable. Lines at or above the level kept, and everything else written
    meanwhile (Python warnings), still reach stderr. A TF_CPP_MIN_LOG_LEVEL the user set is the
    level, for start-up and the rest of the run; otherwise start-up keeps only fatal lines and
    the run errors (``RUN_LOG_LEVEL``). Where Keras is loaded already (``python -m
    keras_lstm_variants``: Python imports the package first), only device discovery is
    filtered."""
    user_level = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    level = STARTUP_LOG_LEVEL if user_level is None else _level(user_level)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", RUN_LOG_LEVEL)
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import keras

            if keras.backend.backend() == "tensorflow":
                import tensorflow as tf

                tf.config.list_physical_devices()  # device discovery logs (cuInit) now
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            sys.stderr.write(filter_log(capture.read().decode(errors="replace"), level))
            sys.stderr.flush()


def _level(value):
    try:
        return int(value)
    except ValueError:
        return 0


def filter_log(text, level):
    """``text`` without absl log records below ``level`` (0 info ... 3 fatal), their
    continuation lines, and absl's banner (kept at level 0)."""
    kept, keep = [], True
    for line in text.splitlines(keepends=True):
        record = _LOG_LINE.match(line)
        if record:
            keep = "IWEF".index(record.group(1)) >= level
        elif line.startswith(_LOG_BANNER):
            if level > 0:
                continue
        elif _PYTHON_WARNING.match(line):
            keep = True
        if keep:
            kept.append(line)
    return "".join(kept)


def main(argv=None):
    """The console entry point: quiet TensorFlow's start-up, then run the command."""
    quiet_tensorflow()
    from keras_lstm_variants.commands.cli import main as command

    return command(argv)
