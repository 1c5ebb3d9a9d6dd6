"""The ``keras-lstm-variants`` command (also ``python -m keras_lstm_variants``).

Each sub-command lives in its own module exposing ``configure(parser)`` (adds its arguments)
and ``run(args) -> int`` (the exit code); this file only dispatches. A sub-command reports
bad input by raising :class:`UsageError`: one line on stderr, exit code 2, no traceback.
"""

import argparse
import importlib
import itertools
import os
import re
import sys
import tempfile

#: sub-command -> (module, one-line help)
COMMANDS = {
    "compare": ("keras_lstm_variants.compare", "train every variant on the long-range task"),
    "bench": ("keras_lstm_variants.bench", "time every variant against the stock Keras layers"),
    "study": (
        "keras_lstm_variants.commands.study",
        "Greff et al.'s random-search study of the variants, with its statistics",
    ),
}


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


def running_as_the_command():
    """Whether this process is ``keras-lstm-variants`` or ``python -m keras_lstm_variants``."""
    if sys.argv and os.path.basename(sys.argv[0]).startswith("keras-lstm-variants"):
        return True
    argv = getattr(sys, "orig_argv", [])
    return any(
        flag == "-m" and module.split(".")[0] == "keras_lstm_variants"
        for flag, module in itertools.pairwise(argv)
    )


def quiet_tensorflow():
    """Load Keras's backend (and find TensorFlow's devices) with TensorFlow's C++ start-up
    logging filtered out of stderr: the cudart stub, CPU feature guard, oneDNN and cuInit lines
    that TF_CPP_MIN_LOG_LEVEL alone does not silence, since TensorFlow writes them before its
    logging reads the variable. Lines at or above the level kept, and everything else written
    meanwhile (Python warnings), still reach stderr. A TF_CPP_MIN_LOG_LEVEL the user set is the
    level, for start-up and the rest of the run; otherwise start-up keeps only fatal lines and
    the run errors (``RUN_LOG_LEVEL``). Called by the package before anything imports Keras,
    when :func:`running_as_the_command`."""
    if "keras" in sys.modules:
        return
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


class UsageError(Exception):
    """Bad input from the command line: printed as one line, exit code 2, no traceback."""


def build_parser():
    parser = argparse.ArgumentParser(prog="keras-lstm-variants", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).configure(sub)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return module.run(args) or 0
    except UsageError as error:
        print(f"keras-lstm-variants {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Sub-commands that have results to save catch it themselves first (compare does).
        print(f"keras-lstm-variants {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): no traceback; keep Python's flush at exit quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
