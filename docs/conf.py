"""Sphinx configuration: the API reference from the docstrings, plus the Markdown pages in docs/.

Build (strict, as CI does): ``python -m sphinx -W --keep-going -b html docs docs/_build``.
"""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir)))

import keras_lstm_variants

project = "keras-lstm-variants"
author = "The keras-lstm-variants authors"
release = version = keras_lstm_variants.__version__
copyright = "2026, " + author

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",  # Google-style "Args:" / "Returns:" sections
    "sphinx.ext.mathjax",  # the cells' ``.. math::`` equations
    "sphinx.ext.viewcode",
    "myst_parser",  # the Markdown pages of docs/
]
myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_typehints = "none"
autodoc_inherit_docstrings = False  # Keras's own docstrings are Markdown, not reST
napoleon_google_docstring = True
napoleon_numpy_docstring = False
html_theme = "furo"
html_title = f"keras-lstm-variants {version}"
# README links point into docs/ ("docs/speed.md"); pages link each other by file name.
suppress_warnings = ["myst.xref_missing"]
