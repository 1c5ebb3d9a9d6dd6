"""The examples in the docstrings run and print what they say (the API reference shows them)."""

import doctest
import importlib
import pkgutil

import pytest

import keras_lstm_variants

MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(keras_lstm_variants.__path__, "keras_lstm_variants.")
    if not info.name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
