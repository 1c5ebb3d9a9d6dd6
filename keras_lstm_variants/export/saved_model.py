"""SavedModel export (``serving_default`` and the streaming signatures)."""

import inspect

import keras

from ._common import _check_flag, _check_path, _input_spec, _named, _tensorflow
from .streaming import Stream


def export_saved_model(model, path, *, streaming=False, verbose=False):
    """Write ``model`` as a SavedModel at ``path`` and return ``path``.

    Args:
        model: a built Keras model with one input ``(batch, time, ...)``, e.g. a
            ``keras.Sequential`` starting with ``keras.Input((None, features))``, or with
            ``keras.Input((None,), dtype="int32")`` and an ``Embedding`` for token ids.
        path: the directory to write; its parent must exist. TF Serving expects
            ``<base>/<version>``, e.g. ``export_saved_model(model, "serving/my_model/1")``.
        streaming: also add the ``initial_state`` and ``step`` signatures (see the module
            docstring). The model must be a chain of layers whose recurrent layers run forward
            (no ``Bidirectional``, no ``go_backwards``), with only per-time-step layers
            (:data:`PER_STEP_LAYERS`, ``TimeDistributed``) between them.
        verbose: print what Keras writes.

    Every argument is checked before any tracing, and nothing is written when a check fails.

    Raises:
        ValueError: the model is not built, has a ``stateful`` layer, an ``unroll=True`` layer
            at a free length, or a ``TimeDistributed`` at a free length (which Keras 3.15
            traces wrongly); ``path`` is empty, a file, a non-empty directory holding no
            SavedModel, or its parent directory is missing; ``streaming=True`` on a model
            that cannot stream (the message names the layer and why).
        TypeError: ``model`` is not a ``keras.Model``, or ``path`` is not a path.
        ImportError: TensorFlow is not installed.
        RuntimeError: Keras runs another backend than TensorFlow.
    """
    path = _check_path(path, directory=True)
    _check_flag("streaming", streaming)
    _check_flag("verbose", verbose)
    archive, _ = _archive(_tensorflow("export_saved_model"), model, streaming=streaming)
    archive.write_out(path, verbose=verbose)
    return path


def _archive(tf, model, streaming, time_steps=None, batch_size=None):
    """An ``ExportArchive`` with ``serving_default`` and, if ``streaming``, the step signatures;
    and the spec of ``serving_default``'s input."""
    spec = _input_spec(tf, model, time_steps, batch_size)
    stream = Stream(model) if streaming else None
    archive = keras.export.ExportArchive()
    archive.track(model)
    _add_checked(
        tf,
        archive,
        "serving_default",
        lambda inputs: _named(model(inputs, training=False)),
        [spec],
    )
    if stream is not None:
        step_spec = tf.TensorSpec((spec.shape[0], *spec.shape[2:]), spec.dtype, name="x_t")
        batch_spec = tf.TensorSpec((), tf.int32, name="batch_size")
        _add_checked(tf, archive, "initial_state", stream.initial_state, [batch_spec])
        state_specs = [
            tf.TensorSpec((spec.shape[0], *shape), dtype, name=name)
            for name, shape, dtype in zip(stream.names, stream.shapes, stream.dtypes, strict=True)
        ]
        _add_checked(tf, archive, "step", stream.step, [step_spec, *state_specs])
    return archive, spec


def _add_checked(tf, archive, name, fn, specs):
    """Add endpoint ``fn`` whose arguments are checked when it runs.

    A SavedModel signature does not check shapes by itself: given the wrong number of features
    it would reshape them into garbage or fail deep inside the graph, and states of batch 1
    with an ``x_t`` of batch 2 would broadcast into a batch-2 answer. ``tf.ensure_shape`` and
    an equality check on the batch sizes raise ``InvalidArgumentError`` naming the argument.
    """

    def checked(*args):
        args = [
            tf.ensure_shape(arg, spec.shape, name=spec.name)
            for arg, spec in zip(args, specs, strict=True)
        ]
        if name == "initial_state":
            check = tf.debugging.assert_non_negative(
                args[0], message="initial_state: `batch_size` must be >= 0"
            )
            with tf.control_dependencies([check]):
                args = [tf.identity(args[0])]
        elif len(args) > 1 and specs[0].shape.rank and specs[0].shape[0] is None:
            batch = tf.shape(args[0])[0]
            checks = [
                tf.debugging.assert_equal(
                    tf.shape(arg)[0],
                    batch,
                    message=f"{name}: `{spec.name}` must have the batch size of `{specs[0].name}`",
                )
                for arg, spec in zip(args[1:], specs[1:], strict=True)
            ]
            with tf.control_dependencies(checks):
                args = [tf.identity(arg) for arg in args]
        elif len(args) > 1 and specs[0].shape.rank:
            # A fixed batch (TFLite): the interpreter resizes inputs to what it is given and has
            # no assertion op, so a batch-1 state would broadcast silently. Reading row
            # `batch - 1` of every argument fails (index out of bounds) when one has fewer rows.
            # The read joins the output (so that the converter keeps it) as `sum < 0`, false for
            # every value, NaN and infinities included, and as a False added per row it is an
            # exact 0: a shape guard must not let one row's values reach another row.
            last = specs[0].shape[0] - 1
            outputs = fn(*args)
            rows = [
                tf.reduce_sum(tf.abs(tf.cast(tf.gather(arg, last), tf.float32))) for arg in args
            ]
            zero = tf.cast(tf.less(tf.add_n(rows), 0.0), outputs["output"].dtype)
            return {**outputs, "output": outputs["output"] + zero}
        return fn(*args)

    # Name the arguments after the specs, so that the reloaded function takes keywords too.
    checked.__signature__ = inspect.Signature(
        [inspect.Parameter(spec.name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for spec in specs]
    )
    archive.add_endpoint(name, checked, input_signature=specs)
