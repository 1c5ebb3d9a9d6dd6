"""The tools, apart from the library: ``keras-lstm-variants compare`` and ``bench``.

Nothing in the package imports this package: ``import keras_lstm_variants`` loads no command.
:mod:`.cli` dispatches the sub-commands; :mod:`.compare` (with :mod:`.training`,
:mod:`.report`, :mod:`.plot`) trains the variants on the tasks of :mod:`.tasks`;
:mod:`.bench` (with :mod:`.bench_timing`, :mod:`.bench_memory`, :mod:`.bench_anchors`,
:mod:`.bench_tables`) times
them; :mod:`.specs` reads variant spec strings; :mod:`.trials` runs independent trials on Ray;
:mod:`.study` runs Greff et al.'s random-search study (:mod:`.study_space` draws the
hyperparameters, :mod:`.study_analysis` computes its statistics, :mod:`.study_plots` draws
them).
"""
