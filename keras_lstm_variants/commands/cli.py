"""The ``keras-lstm-variants`` command (also ``python -m keras_lstm_variants``).

The console script enters through :mod:`keras_lstm_variants_launcher`, which quiets
TensorFlow's start-up logging before the package (and so TensorFlow) loads, then calls
:func:`main` here.

Each sub-command lives in its own module exposing ``configure(parser)`` (adds its arguments)
and ``run(args) -> int`` (the exit code); this file only dispatches. A sub-command reports
bad input by raising :class:`UsageError`: one line on stderr, exit code 2, no traceback.
"""

import argparse
import importlib
import os
import sys

#: sub-command -> (module, one-line help)
COMMANDS = {
    "compare": (
        "keras_lstm_variants.commands.compare",
        "train every variant on the long-range task",
    ),
    "bench": (
        "keras_lstm_variants.commands.bench",
        "time every variant against the stock Keras layers",
    ),
    "study": (
        "keras_lstm_variants.commands.study",
        "Greff et al.'s random-search study of the variants, with its statistics",
    ),
}


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
