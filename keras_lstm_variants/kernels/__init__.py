"""Kernels: the ways a sequence layer can run its cell over time, asked in order.

Each kernel module exposes the same two functions over one :class:`Call` record:

* ``why_not(layer, call) -> None | str``: ``None`` when the kernel can run this call, else the
  reason in a few words ("layer_norm is on");
* ``run(layer, call) -> (last_output, outputs, final_states)``: what Keras's time loop returns
  for the same input (outputs in processing order, ``(batch, 1, units)`` without
  ``return_sequences``).

:data:`KERNELS` is the ordered registry. A layer's ``loop`` argument picks among them
(:func:`choose`): ``"auto"`` takes the first kernel that can run unless the kernel's optional
``auto_skips(layer, call)`` gives a reason to pass it over (``tf-block`` is opt-in, because
TFLite's converter does not take its op; ``jax-scan`` on a CPU gains only in training); a
kernel's name asks for that one and raises ``ValueError`` with its reason when it cannot
run; ``"keras"`` is Keras's own loop, which always can. :func:`forced` overrides every
layer's ``loop`` inside a ``with`` block, through a context variable (export uses it;
another thread is not affected).
:func:`explain` reports every kernel's answer for a layer and an input.

Kernels read what a cell *declares* (``RecurrentCell.capabilities``, see
:mod:`keras_lstm_variants.cells.base`) and its instance options, never a list of classes: a
subclass that keeps the step keeps its kernels; one that overrides a step method loses the
capabilities it does not declare again.

Measured speeds of each kernel: docs/speed.md.
"""

import contextlib
import contextvars
import dataclasses
from typing import Any

from . import jax_scan, keras_loop, min_scan, mlstm_parallel, tf_block, torch_eager, torch_fused

#: Every kernel, in the order ``loop="auto"`` asks them; ``keras`` (always able) last.
KERNELS = {
    module.NAME: module
    for module in (
        min_scan,
        mlstm_parallel,
        jax_scan,
        torch_fused,
        tf_block,
        torch_eager,
        keras_loop,
    )
}
#: Every value a layer's ``loop`` argument takes.
LOOPS = ("auto", *KERNELS)

_FORCED = contextvars.ContextVar("keras_lstm_variants_forced_loop", default=None)
_OBSERVERS = contextvars.ContextVar("keras_lstm_variants_loop_observers", default=())


@dataclasses.dataclass(frozen=True)
class Call:
    """One call of a layer's time loop: what ``keras.layers.RNN.call`` hands to
    ``inner_loop``, and the layer's sequence options.

    ``sequences`` ``(batch, time, features)``; ``initial_state``: a list in the cell's
    ``state_names`` order; ``mask``: ``(batch, time)`` or ``None``; ``training``: as given to
    the layer; the others as the layer's attributes of the same names.
    """

    sequences: Any
    initial_state: list
    mask: Any = None
    training: Any = False
    go_backwards: bool = False
    return_sequences: bool = False
    zero_output_for_mask: bool = False
    unroll: bool = False

    def replace(self, **changes):
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)


def record(layer, sequences, initial_state, mask, training):
    """The :class:`Call` of ``layer`` (a ``keras.layers.RNN``) on these inputs."""
    if isinstance(mask, (list, tuple)):
        mask = mask[0]  # the sequences' mask first
    return Call(
        sequences=sequences,
        initial_state=list(initial_state),
        mask=mask,
        training=training,
        go_backwards=layer.go_backwards,
        return_sequences=layer.return_sequences,
        zero_output_for_mask=layer.zero_output_for_mask,
        unroll=layer.unroll,
    )


def check_loop(loop, owner="layer"):
    """Return ``loop`` if it names a kernel (or ``"auto"``); else raise listing them."""
    if not isinstance(loop, str) or loop not in LOOPS:
        raise ValueError(
            f"{owner}: argument `loop` must be one of {', '.join(map(repr, LOOPS))}; "
            f"received loop={loop!r}."
        )
    return loop


@contextlib.contextmanager
def forced(loop):
    """Inside the block, every layer of this package runs as if built with ``loop=loop``
    (in this thread or task only: a ``contextvars`` value).

    ``forced("keras")`` steps every cell in Keras's loop (e.g. for forward-mode autodiff in
    training, which the ``jax-scan`` kernel's custom gradient does not take);
    ``forced("auto")`` keeps the automatic choice and so drops the opt-in ``tf-block``
    (TFLite export does that).

    >>> import numpy as np, keras_lstm_variants as klv
    >>> layer, x = klv.MinGRU(4), np.zeros((2, 5, 3))
    >>> klv.explain_kernels(layer, x).runs
    'min-scan'
    >>> with klv.kernels.forced("keras"):
    ...     klv.explain_kernels(layer, x).runs
    'keras'
    """
    token = _FORCED.set(check_loop(loop, "forced"))
    try:
        yield
    finally:
        _FORCED.reset(token)


def requested(layer):
    """The loop ``layer`` asks for now: the :func:`forced` one, else its ``loop``."""
    return _FORCED.get() or getattr(layer, "loop", "auto")


def _auto_skips(kernel, layer, call):
    """Why ``loop="auto"`` passes over a kernel that can run (its optional ``auto_skips``)."""
    skips = getattr(kernel, "auto_skips", None)
    return None if skips is None else skips(layer, call)


def auto(layer, call):
    """The name of the first kernel that can run ``call`` and that ``auto`` does not skip."""
    for name, kernel in KERNELS.items():
        if kernel.why_not(layer, call) is None and _auto_skips(kernel, layer, call) is None:
            return name
    raise AssertionError("the keras loop always runs")  # pragma: no cover


def choose(layer, call):
    """The name of the kernel that runs ``call`` for ``layer``; raises ``ValueError`` when the
    requested one cannot (never a silent fallback)."""
    loop = requested(layer)
    if loop == "auto":
        return auto(layer, call)
    reason = KERNELS[loop].why_not(layer, call)
    if reason is not None:
        raise ValueError(
            f"{type(layer).__name__} '{layer.name}': loop={loop!r} cannot run this call: "
            f"{reason}. Use loop='auto' to take the first kernel that can "
            "(klv.explain_kernels(layer, inputs) lists them)."
        )
    return loop


def run(layer, call):
    """Run ``call`` with the kernel :func:`choose` names, after the active observers."""
    call = observe(layer, call)
    return KERNELS[choose(layer, call)].run(layer, call)


@contextlib.contextmanager
def observing(observer):
    """Inside the block (this thread or task only), every variant layer's time loop calls
    ``observer(layer, call)`` with its :class:`Call` before running it; the observer may
    return a changed call (e.g. with another ``mask``) that the layer then runs, or ``None``.

    The hook :func:`keras_lstm_variants.trace_gates` uses: the observer sees what Keras hands
    to the layer's loop (the input sequence, the resolved initial state, the mask).
    """
    token = _OBSERVERS.set((*_OBSERVERS.get(), observer))
    try:
        yield
    finally:
        _OBSERVERS.reset(token)


def observe(layer, call):
    """``call`` after every active :func:`observing` observer (for a ``keras.layers.RNN``
    that is not one of this package's layers, see :mod:`keras_lstm_variants.gates.tracing`)."""
    for observer in _OBSERVERS.get():
        call = observer(layer, call) or call
    return call


class Explanation(dict):
    """``{kernel name: None | reason}``: ``None`` where the kernel can run the call, else why
    not (``loop="<name>"`` would raise it). Attributes: ``auto_skips``, ``{name: None |
    reason}`` for the kernels that can run, why ``loop="auto"`` passes over them (opt-in, or
    no gain there); ``auto``, the kernel ``loop="auto"`` picks; ``runs``, the one the layer
    runs with its ``loop`` (``None`` where that one cannot: the call raises). ``str()`` gives
    one line per kernel."""

    def __init__(self, answers, auto_skips, auto, runs):
        super().__init__(answers)
        self.auto_skips, self.auto, self.runs = auto_skips, auto, runs

    def __str__(self):
        lines = []
        for name, reason in self.items():
            skipped = self.auto_skips.get(name)
            if reason is not None:
                lines.append(f"{name}: no: {reason}")
            elif skipped is not None:
                lines.append(f"{name}: can run, auto skips it: {skipped}")
            else:
                lines.append(f"{name}: yes")
        lines.append(f"auto picks: {self.auto}")
        if self.runs != self.auto:
            lines.append(f"the layer's loop runs: {self.runs or 'nothing (it raises)'}")
        return "\n".join(lines)


def explain(layer, inputs, training=False, initial_state=None, mask=None):
    """Which kernel ``layer`` would run on ``inputs`` and why not each of the others.

    Args:
        layer: one of this package's sequence layers.
        inputs: ``(batch, time, features)``: an array, a tensor, or a ``keras.KerasTensor``
            (only the shape and the backend's state are read: nothing is computed).
        training: as the layer would be called.
        initial_state, mask: as the layer would be called (zeros and ``None`` by default).

    Returns:
        an :class:`Explanation`; ``print`` it for one line per kernel, e.g.
        ``jax-scan: no: layer_norm is on``.

    >>> import numpy as np, keras_lstm_variants as klv
    >>> report = klv.explain_kernels(klv.LSTM(8, layer_norm=True), np.zeros((2, 5, 3)))
    >>> report["keras"] is None
    True
    """
    from keras import KerasTensor, ops

    if not hasattr(layer, "cell") or not hasattr(layer, "go_backwards"):
        raise ValueError(
            "Argument `layer` must be one of keras_lstm_variants' sequence layers; "
            f"received {type(layer).__name__}."
        )
    if not isinstance(inputs, KerasTensor) and not ops.is_tensor(inputs):
        inputs = ops.convert_to_tensor(inputs)
    if len(inputs.shape) != 3:
        raise ValueError(
            "Argument `inputs` must be shaped (batch, time, features); received shape "
            f"{tuple(inputs.shape)}."
        )
    if initial_state is None:
        sizes = layer.cell.state_size
        sizes = sizes if isinstance(sizes, (list, tuple)) else [sizes]
        initial_state = [_Shaped((inputs.shape[0], size)) for size in sizes]
    call = record(layer, inputs, initial_state, mask, training)
    loop = requested(layer)
    answers, skipped = {}, {}
    for name, kernel in KERNELS.items():
        answers[name] = kernel.why_not(layer, call)
        if answers[name] is None:
            skipped[name] = _auto_skips(kernel, layer, call)
    picked = auto(layer, call)
    runs = picked if loop == "auto" else (loop if answers[loop] is None else None)
    return Explanation(answers, skipped, picked, runs)


class _Shaped:
    """A stand-in carrying a shape, for :func:`explain` (kernels read shapes only)."""

    def __init__(self, shape):
        self.shape = tuple(shape)


__all__ = ["KERNELS", "LOOPS", "Call", "choose", "explain", "forced", "observing", "run"]
