"""Loops faster than Keras's generic ``rnn``: JAX training, and the torch backend.

**JAX training** (:func:`rnn`): the large weight gradients are taken after the loop.

What: under JAX, JAX's autodiff of ``lax.scan`` accumulates each weight gradient inside the
reverse loop, one small product per step (``dU += h_{t-1}^T dz_t``, ``dW += x_t^T dz_t``).
:func:`rnn` runs the same forward loop as
:meth:`~keras_lstm_variants.layers.VariantRNN.inner_loop` (the cell's ``project`` then
``transition`` at each step) under a ``jax.custom_vjp`` whose backward pass splits the work as
cuDNN does:

* JAX differentiates the loop only with respect to the initial states, the small elementwise
  weights (peepholes, FGR's gate feedback) and a zero ``e_t`` added to each step's
  pre-activations ``z_t = W x_t + b + U h_{t-1}``: the gradient of ``e_t`` is ``dz_t``, and no
  ``W``, ``b`` or ``U`` gradient is accumulated in the loop. The forward loop saves each
  step's matrix products and the reverse loop recomputes the elementwise rest from them
  (``jax.checkpoint``, :data:`POLICY`);
* after the loop, those three come from all ``time * batch`` rows at once:
  ``dU = H_prev^T dZ`` (one GEMM), and ``dW``, ``db``, ``dx`` from the VJP of the cell's own
  ``project``.

``dU = H_prev^T dZ`` holds because these cells add ``U h_{t-1}`` to ``W x_t + b`` unchanged
(no layer norm, no recurrent dropout). No gate equation is written here: ``transition`` stays
their one definition.

Why: on the idle 2-core CPU of docs/speed.md, the training step (``train_on_batch``,
``jit_compile=True``) took 0.91x the time of the per-step path at 16x1000x32x128
(batch x time x features x units) and 1.01x (a tie) at 64x100x64x256. Inference gains nothing
(its forward pass is the same scan), so the path is taken in training only.

When: :func:`supported` decides; otherwise the layers step the cell as before (exact class
match, no layer norm, zoneout, dropout or recurrent dropout, no mixed precision, no
``unroll``, a known number of steps). Masks (JAX's rule: a masked step keeps the states and
outputs the carried ``h``), ``go_backwards`` (so ``Bidirectional``), ``stateful``,
``return_state``, ``proj_units``/``proj_clip``/``cell_clip``, ``use_bias=False``, peephole
subsets, CIFG and every Greff variant (FGR's extra state included) take the path.
tests/test_fast_path.py proves it equal to ``keras.layers.RNN(cell)``: outputs, states, and
the gradients of the inputs, initial states and every weight.

**On a GPU or TPU** (:func:`scan_supported`), JAX runs the same loop for every cell in
:data:`EAGER_CELLS`, in inference and in training, with ``lax.scan(..., unroll=8)``
(:data:`ACCELERATOR_UNROLL`); Keras's own JAX loop does not unroll. The LSTM family keeps the
custom gradient in training; the GRU and layer norm are differentiated as they stand. On an
H100, our LSTM's training step at 64x100x64x256 took 0.80-0.86x ``torch.nn.LSTM``'s (cuDNN)
and unrolling made the loop 1.5-2x faster (docs/speed-gpu.md). On a CPU the loop is not
unrolled (1.6x slower gradient there).

Limitation: a ``jax.custom_vjp`` function cannot be differentiated in forward mode. Under
``training=True`` on this path, ``jax.jvp``, ``jax.jacfwd`` and ``jax.hessian`` raise JAX's
``TypeError`` ("can't apply forward-mode autodiff (jvp) to a custom_vjp function") -- it
cannot be detected from inside the layer, because JAX's reverse mode traces the layer the same
way. Calls with ``training=False`` (the default) never take the custom gradient, so forward mode
works there; for forward mode in training, set ``keras_lstm_variants.fast.ENABLED = False``.

**The torch backend** (:func:`eager_rnn`, training and inference): Keras runs it op by op, and
its ``rnn`` spends more per step than the step. The input projection of all steps is one GEMM,
then a Python loop calls ``transition``: 0.66-0.80x the inference time and 0.88-0.91x the
training step of Keras's loop (docs/speed.md). :func:`eager_supported` decides;
tests/test_eager_path.py proves it equal to ``keras.layers.RNN(cell)`` on every backend.
There, the vanilla LSTM and the GRU without options run PyTorch's own kernels instead
(:func:`torch_rnn`, the cuDNN pattern): the LSTM at 1.02x ``torch.nn.LSTM``'s training step and
1.10x its inference at 64x100x64x256, against 2.29x and 3.30x for the loop (docs/speed.md).

**TensorFlow inference without XLA, opt-in** (:data:`BLOCK_LSTM`, :func:`block_lstm`): the
vanilla and peephole LSTM run TensorFlow's fused ``BlockLSTMV2`` kernel at batches up to
:data:`BLOCK_MAX_BATCH` (within :data:`BLOCK_MAX_BYTES`), where it took 0.31-0.81x the cell's
loop (docs/speed.md); :func:`block_supported` decides. Graphs traced this way
(``jit_compile=False``, a SavedModel) carry the op, which TFLite's converter does not take: so
it is off by default, and ``export_tflite`` traces with :func:`disabled`.
"""

import contextlib
import functools
import warnings

from keras import StatelessScope, activations, backend, ops

from .cells import CIFGLSTMCell, GreffLSTMCell, GRUCell, LSTMCell, PeepholeLSTMCell

#: Set to False to step the cell in training too (e.g. for forward-mode autodiff).
ENABLED = True
#: Set to True to run TensorFlow's fused ``BlockLSTMV2`` in inference where
#: :func:`block_supported` allows (0.30-0.88x the stock layer's time at batches up to 16, e.g.
#: a SavedModel served on a CPU). Off by default: a graph that carries the op does not convert
#: to TFLite (``tf.lite.TFLiteConverter`` has no such op; ``export_tflite`` steps the cell).
BLOCK_LSTM = False
#: The cells that take the path: exactly these classes (a subclass may change the step).
CELLS = (LSTMCell, PeepholeLSTMCell, CIFGLSTMCell, GreffLSTMCell)
#: ``jax.checkpoint_policies`` name for the reverse loop. Measured on the idle 2-core CPU,
#: training step / the per-step path, at 64x100x64x256 and 16x1000x32x128: "dots_saveable"
#: (keep the products, recompute the elementwise ops) 1.01 and 0.91; "nothing_saveable"
#: (recompute the products too) 1.21 and 0.91; None (keep everything) 1.08.
POLICY = "dots_saveable"
#: ``lax.scan``'s ``unroll`` (steps per loop iteration) on a GPU or TPU; on a CPU the loop is
#: not unrolled. Measured on an H100 (docs/speed-gpu.md): each iteration launches kernels, and
#: unrolling 8 steps fuses across them.
ACCELERATOR_UNROLL = 8


@contextlib.contextmanager
def disabled():
    """Within the block, the layers step the cell in Keras's loop (:data:`ENABLED` off), e.g.
    to trace a graph for TFLite, which has no ``BlockLSTMV2``."""
    global ENABLED
    enabled, ENABLED = ENABLED, False
    try:
        yield
    finally:
        ENABLED = enabled


def accelerator():
    """Whether JAX's default device is a GPU or TPU (where :func:`scan_supported` applies)."""
    import jax

    return jax.default_backend() != "cpu"


def unroll():
    """``lax.scan``'s ``unroll`` for JAX's default device."""
    return ACCELERATOR_UNROLL if accelerator() else 1


def supported(layer, sequences, training):
    """Whether ``layer`` takes :func:`rnn` on ``sequences`` (else it steps the cell)."""
    cell = layer.cell
    return (
        ENABLED
        and training is True  # the gain is in the backward pass; inference keeps forward mode
        and backend.backend() == "jax"
        and type(cell) in CELLS
        and not cell.layer_norm  # LN(W x) + LN(U h): the gradient at U h is not dz
        and not any(cell.zoneout_rates.values())  # applied after transition, in gates
        and not (cell.dropout or cell.recurrent_dropout)
        and cell.compute_dtype == cell.variable_dtype
        and not layer.unroll
        and sequences.shape[1] is not None
    )


def scan_supported(layer, sequences, training):
    """Whether ``layer`` takes :func:`rnn` without its custom gradient: JAX on a GPU or TPU,
    where the unrolled scan beats Keras's (:data:`ACCELERATOR_UNROLL`), for every cell
    :func:`eager_supported` takes, in inference and in training."""
    return (
        ENABLED
        and backend.backend() == "jax"
        and accelerator()
        and sequences.shape[1] is not None
        and _steps_transition(layer, training)
    )


def rnn(
    cell,
    sequences,
    initial_state,
    mask,
    go_backwards,
    zero_output_for_mask,
    training,
    weight_gradients_after=True,
):
    """``(last_output, outputs, final_states)`` as Keras's JAX ``rnn`` returns them for the
    step ``cell.gates``: outputs in processing order; a masked step keeps the states and
    outputs the carried ``h`` (zeros with ``zero_output_for_mask``).

    ``weight_gradients_after``: the custom gradient above (where :func:`supported`); else
    the same loop, differentiated by JAX as it stands (where only :func:`scan_supported`)."""
    import jax
    import jax.numpy as jnp

    weights = list(cell.weights)

    def loop_with(values, x, mask, e, states):
        """The forward loop; ``e[t]`` (zeros, or ``None``) is added to step t's ``z``."""

        def body(states, inputs):
            x_t, mask_t, e_t = inputs
            with StatelessScope(state_mapping=list(zip(weights, values, strict=True))):
                z = cell.project(x_t, training)
                _, new_states = cell.transition(
                    z if e_t is None else z + e_t, list(states), training
                )
            new_states = tuple(new_states)
            if mask_t is not None:
                pairs = zip(new_states, states, strict=True)
                new_states = tuple(jnp.where(mask_t, a, b) for a, b in pairs)
            return new_states, new_states[0]

        if e is not None and POLICY is not None:
            body = jax.checkpoint(body, policy=getattr(jax.checkpoint_policies, POLICY))
        final, outputs = jax.lax.scan(body, tuple(states), (x, mask, e), unroll=unroll())
        return outputs, final

    x = jnp.swapaxes(sequences, 0, 1)
    if mask is not None:
        mask = jnp.swapaxes(jnp.asarray(mask, bool), 0, 1)[..., None]
    if go_backwards:
        x = jnp.flip(x, 0)
        mask = None if mask is None else jnp.flip(mask, 0)
    values = [w.value for w in weights]
    if weight_gradients_after:
        loop = _with_weight_gradients_after(cell, weights, loop_with, training)
        outputs, final = loop(values, x, tuple(initial_state), mask)
    else:
        outputs, final = loop_with(values, x, mask, None, tuple(initial_state))
    if mask is not None and zero_output_for_mask:
        outputs = jnp.where(mask, outputs, jnp.zeros_like(outputs))
    outputs = jnp.swapaxes(outputs, 0, 1)
    return outputs[:, -1], outputs, list(final)


def _with_weight_gradients_after(cell, weights, loop_with, training):
    """:func:`rnn`'s ``loop_with`` under the ``jax.custom_vjp`` described at the top: JAX
    differentiates the loop with respect to ``e``, the states and the small weights only, and
    ``W``, ``U`` and ``b`` get their gradients from all steps at once after it."""
    import jax
    import jax.numpy as jnp

    position = {id(w): i for i, w in enumerate(weights)}
    # W, U and b: their gradients are taken after the loop; the others' inside it.
    outer = [position[id(cell.kernel)], position[id(cell.recurrent_kernel)]]
    if cell.input_bias is not None:
        outer.append(position[id(cell.input_bias)])
    inner = [i for i in range(len(weights)) if i not in outer]

    @jax.custom_vjp
    def loop(values, x, states, mask):
        return loop_with(values, x, mask, None, states)

    def loop_fwd(values, x, states, mask):
        def differentiated(inner_values, e, states):  # W, U, b held constant
            merged = list(values)
            for i, value in zip(inner, inner_values, strict=True):
                merged[i] = value
            return loop_with(merged, x, mask, e, states)

        e = jnp.zeros((*x.shape[:2], cell.kernel.shape[1]), x.dtype)
        result, vjp = jax.vjp(differentiated, [values[i] for i in inner], e, tuple(states))
        return result, (values, x, states, result[0], vjp)

    def loop_bwd(residuals, cotangents):
        values, x, states, outputs, vjp = residuals
        d_inner, d_z, d_states = vjp(cotangents)
        d_z = d_z.reshape(-1, d_z.shape[-1])  # (time * batch, G * units)
        h_prev = jnp.concatenate([states[0][None], outputs[:-1]])  # the h entering each step

        def project(outer_values, x):
            mapping = [(weights[i], v) for i, v in zip(outer, outer_values, strict=True)]
            with StatelessScope(state_mapping=mapping):
                return cell.project(x, training)

        outer_values = [values[i] for i in outer]
        _, project_vjp = jax.vjp(project, outer_values, x.reshape(-1, x.shape[-1]))
        d_outer, d_x = project_vjp(d_z)  # dW = X^T dZ, db = sum dZ, dx = dZ W^T
        d_outer[1] = h_prev.reshape(-1, h_prev.shape[-1]).T @ d_z  # dU = H_prev^T dZ
        d_values = [None] * len(weights)
        for i, d in zip(outer + inner, list(d_outer) + list(d_inner), strict=True):
            d_values[i] = d
        return d_values, d_x.reshape(x.shape), d_states, None

    loop.defvjp(loop_fwd, loop_bwd)
    return loop


#: The cells :func:`eager_rnn` steps: the LSTM family and the GRU (exact classes).
EAGER_CELLS = (*CELLS, GRUCell)


def eager_supported(layer, sequences, mask, training):
    """Whether ``layer`` takes :func:`eager_rnn` on ``sequences``: the torch backend (Keras
    runs it eagerly, op by op), no mask, no zoneout, no dropout in training, no ``unroll``."""
    return (
        ENABLED
        and backend.backend() == "torch"
        and mask is None
        and _steps_transition(layer, training)
    )


def _steps_transition(layer, training):
    """What the layers' own loops (:func:`eager_rnn`, and :func:`rnn` on an accelerator) need:
    a cell of :data:`EAGER_CELLS` whose step is ``transition(project(x))`` as it stands (no
    zoneout, which ``gates`` applies after it), no dropout in training, and no ``unroll``."""
    cell = layer.cell
    return (
        type(cell) in EAGER_CELLS
        and not any(cell.zoneout_rates.values())
        and not (training and (cell.dropout or cell.recurrent_dropout))
        and not layer.unroll
    )


def eager_rnn(cell, sequences, initial_state, go_backwards, return_sequences, training):
    """``(last_output, outputs, final_states)`` of ``cell``'s steps over ``sequences``, for
    a backend that runs every op eagerly: the input projection of all steps in one GEMM
    (``project`` is row-wise), then a plain Python loop over ``transition``.

    On the torch backend Keras's ``rnn`` spends more per step than the step itself (tree
    flattening, per-step masking and output bookkeeping), and each step's own ``W x_t + b`` is
    two more eager ops; this loop is what ``keras.layers.LSTM``'s own torch fallback does.
    ``outputs`` is ``(batch, time, units)`` with ``return_sequences``, else the last output
    ``(batch, 1, units)``.
    """
    x = ops.swapaxes(sequences, 0, 1)  # (time, batch, features)
    if go_backwards:
        x = ops.flip(x, 0)
    time, batch = x.shape[0], x.shape[1]
    z_x = cell.project(ops.reshape(x, (time * batch, x.shape[2])), training)
    z_x = ops.reshape(z_x, (time, batch, z_x.shape[-1]))
    states, outputs = list(initial_state), []
    # unstack, not z_x[t]: the gradient of each index would be a zero-filled (time, ...) tensor
    for z_x_t in ops.unstack(z_x, axis=0):
        _, states = cell.transition(z_x_t, states, training)
        outputs.append(states[0])
    last = states[0]
    return last, ops.stack(outputs, axis=1) if return_sequences else last[:, None], states


def fused_supported(layer, sequences, mask, training):
    """Whether ``layer`` takes :func:`torch_rnn`: where :func:`eager_supported` holds, for
    exactly :class:`~keras_lstm_variants.cells.LSTMCell` or
    :class:`~keras_lstm_variants.cells.GRUCell` (``reset_after=True``) with the stock
    activations, no option (layer norm, projection, clipping), one dtype, and
    ``use_cudnn="auto"``."""
    cell = layer.cell
    if type(cell) is LSTMCell:
        options = _lstm_options(cell)
    elif type(cell) is GRUCell:
        options = cell.layer_norm or not cell.reset_after
    else:
        return False
    return (
        eager_supported(layer, sequences, mask, training)
        and not options
        and layer.use_cudnn == "auto"
        and _kernel_arithmetic(cell)
    )


def _lstm_options(cell):
    """Whether an LSTM-type cell has an option no fused kernel computes: layer norm, a
    projection, or clipping of the cell state."""
    return cell.layer_norm or cell.proj_units or cell.cell_clip


def _kernel_arithmetic(cell):
    """Whether ``cell`` computes what the fused kernels (PyTorch's, TensorFlow's
    ``BlockLSTMV2``) do: the stock activations, in one dtype for weights and computation."""
    return (
        cell.activation is activations.tanh
        and cell.recurrent_activation is activations.sigmoid
        and cell.compute_dtype == cell.variable_dtype
    )


def torch_rnn(cell, sequences, initial_state, go_backwards, return_sequences):
    """``(last_output, outputs, final_states)`` as :func:`eager_rnn` returns them, from
    PyTorch's own kernel (``torch.nn.LSTM``'s or ``torch.nn.GRU``'s: oneDNN on a CPU, cuDNN
    on a GPU) called on the cell's weights.

    The vanilla LSTM and the GRU with ``reset_after=True`` are the cells PyTorch ships as fused
    kernels with the same equations. Its weights are the transposes of ``kernel`` and
    ``recurrent_kernel``, gate blocks in its order: the LSTM's is Keras's (input, forget,
    candidate, output); the GRU's is (reset, update, new) where Keras has (update, reset,
    candidate). The LSTM's ``bias`` is the input bias (the recurrent one zero); the GRU's two
    rows are the input and recurrent biases. Gradients reach the Keras variables through these
    views. As with cuDNN in ``keras.layers.LSTM``, the cell's ``transition`` is not called
    here; tests/test_eager_path.py proves the two equal.
    """
    import torch

    gru = type(cell) is GRUCell

    def ordered(weight):  # gate blocks on the last axis, in PyTorch's order
        if not gru:
            return weight
        update, reset, candidate = torch.chunk(weight, 3, dim=-1)
        return torch.cat([reset, update, candidate], dim=-1)

    weights = {
        "weight_ih_l0": ordered(cell.kernel.value).T,
        "weight_hh_l0": ordered(cell.recurrent_kernel.value).T,
    }
    if sequences.device.type != "cpu":  # cuDNN views each weight as one flat block
        weights = {name: weight.contiguous() for name, weight in weights.items()}
    if cell.bias is not None:
        bias = cell.bias.value
        weights["bias_ih_l0"] = ordered(bias[0] if gru else bias)
        weights["bias_hh_l0"] = ordered(bias[1]) if gru else torch.zeros_like(bias)
    x = torch.flip(sequences, [1]) if go_backwards else sequences
    kind = "GRU" if gru else "LSTM"
    module = _torch_module(kind, x.shape[-1], cell.units, cell.bias is not None, x.dtype, x.device)
    states = tuple(state[None] for state in initial_state)
    with warnings.catch_warnings():  # on a GPU: "weights are not part of single contiguous chunk"
        warnings.simplefilter("ignore", UserWarning)
        outputs, final = torch.func.functional_call(
            module, weights, (x, states[0] if gru else states)
        )
    final = [final[0]] if gru else [state[0] for state in final]
    last = final[0]
    return last, outputs if return_sequences else last[:, None], final


#: The cells :func:`block_lstm` runs: the LSTM and the peephole LSTM (exact classes).
BLOCK_CELLS = (LSTMCell, PeepholeLSTMCell)
#: The largest batch :func:`block_lstm` runs. On the 2-core CPU of docs/speed.md, inference
#: (``predict_on_batch``, min of 8 interleaved, scripts/block_probe.py) took 0.43-0.81x the
#: cell's loop (LSTM) and 0.31-0.75x (peephole) at batches 1-16, units 128-256, 100 and 1000
#: steps; 0.91-1.38x at batches 24-64, where TensorFlow's kernel multiplies more slowly than
#: its MatMul.
BLOCK_MAX_BATCH = 16
#: The most memory :func:`block_lstm` may take for its outputs: the op keeps seven
#: ``(time, batch, units)`` tensors (every gate and state at every step) where the cell's loop
#: in inference keeps the states alone. 256 MiB is 4,681 steps at batch 16 and 128 units.
BLOCK_MAX_BYTES = 256 * 2**20


def block_fits(batch, time, units):
    """Whether :func:`block_lstm` takes a ``(batch, time, features)`` float32 input: a batch up to
    :data:`BLOCK_MAX_BATCH` and outputs within :data:`BLOCK_MAX_BYTES`. Python integers, or
    int64 tensors (at run time)."""
    return (batch <= BLOCK_MAX_BATCH) & (7 * 4 * batch * time * units <= BLOCK_MAX_BYTES)


def block_supported(layer, sequences, mask, training):
    """Whether ``layer`` takes :func:`block_lstm`: opted in (:data:`BLOCK_LSTM`), TensorFlow in
    inference (``training`` not True) and nothing recording a gradient (a ``GradientTape``: the
    cell's loop has the faster gradient, and a second-order one), outside XLA
    (``jit_compile=True`` compiles the cell's own loop: XLA has no kernel for the op), with no
    GPU visible (unmeasured there), for exactly
    :class:`~keras_lstm_variants.cells.LSTMCell` or
    :class:`~keras_lstm_variants.cells.PeepholeLSTMCell` (any subset of peepholes) with the
    stock activations, float32, no option but ``use_bias``, no mask, no ``unroll``, and not
    ``LSTM(use_cudnn=False)``; and where :func:`block_fits` holds, or the batch or time is
    unknown until run time (then :func:`block_lstm` chooses)."""
    cell = layer.cell
    return (
        ENABLED
        and BLOCK_LSTM
        and backend.backend() == "tensorflow"
        and not training
        and mask is None
        and type(cell) in BLOCK_CELLS
        and _steps_transition(layer, training)  # no zoneout, no unroll
        and not _lstm_options(cell)
        and _kernel_arithmetic(cell)
        and cell.compute_dtype == "float32"
        and not (layer.drop_in and layer.use_cudnn is False)
        and block_fits(sequences.shape[0] or 0, sequences.shape[1] or 0, cell.units)
        and not _tensorflow_needs_loop()
    )


def _tensorflow_needs_loop():
    """Whether TensorFlow is tracing for XLA (``jit_compile=True``, a TPU), a gradient tape is
    recording, or TensorFlow sees a GPU: the checks TensorFlow's own code makes."""
    import tensorflow as tf

    try:
        from tensorflow.python.eager.record import could_possibly_record
        from tensorflow.python.ops.control_flow_util import GraphOrParentsInXlaContext
    except ImportError:  # moved in a later TensorFlow: step the cell
        return True
    graph = tf.compat.v1.get_default_graph()
    return GraphOrParentsInXlaContext(graph) or could_possibly_record() or _tensorflow_gpu()


@functools.cache
def _tensorflow_gpu():
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


def block_lstm(cell, sequences, initial_state, go_backwards, return_sequences, keras_loop):
    """``(last_output, outputs, final_states)`` as :func:`eager_rnn` returns them, from
    TensorFlow's fused ``BlockLSTMV2`` kernel (TensorFlow's ``LSTMBlockFusedCell``: one op for
    the whole sequence, each step's products and gate arithmetic in C++), called on the cell's
    weights.

    Its equations are the peephole LSTM's with the output gate's peephole on the new ``c``, as
    ours, and its gate blocks are Keras's (input, forget, candidate, output): ``w`` is
    ``[kernel; recurrent_kernel]``, and a gate without a peephole gets a zero one. Its
    gradient is ``BlockLSTMGradV2`` (:func:`_block_lstm`): exact, if slower than the cell's
    loop. As with :func:`torch_rnn`, ``transition`` is not called here;
    tests/test_eager_path.py proves the two equal.

    ``keras_loop()``: the layer's own loop, for an input :func:`block_fits` refuses when the
    batch or time is known only at run time (a graph with free axes, e.g. a SavedModel): the
    graph then holds both, under ``tf.cond``.
    """
    import tensorflow as tf

    def block():
        return _block_lstm_layer(cell, sequences, initial_state, go_backwards, return_sequences)

    def loop():  # its states a list, as block's (tf.cond compares the structures)
        last, outputs, states = keras_loop()
        return last, outputs, list(states)

    if None not in sequences.shape[:2]:  # block_supported: block_fits
        return block()
    batch, time = tf.unstack(tf.cast(tf.shape(sequences)[:2], tf.int64))
    return tf.cond(block_fits(batch, time, cell.units), block, loop)


def _block_lstm_layer(cell, sequences, initial_state, go_backwards, return_sequences):
    import tensorflow as tf

    x = tf.transpose(sequences, [1, 0, 2])  # (time, batch, features)
    if go_backwards:
        x = tf.reverse(x, [0])
    zeros = tf.zeros((cell.units,), x.dtype)
    peepholes = [
        cell.peephole_weights[gate].value if gate in cell.peepholes else zeros
        for gate in ("input", "forget", "output")
    ]
    bias = cell.bias.value if cell.bias is not None else tf.zeros((4 * cell.units,), x.dtype)
    h_0, c_0 = initial_state
    w = tf.concat([cell.kernel.value, cell.recurrent_kernel.value], 0)
    c, h = _block_lstm(x, c_0, h_0, w, *peepholes, bias, bool(cell.peepholes))
    last = h[-1]
    outputs = tf.transpose(h, [1, 0, 2]) if return_sequences else last[:, None]
    return last, outputs, [last, c[-1]]


def _block_lstm(x, c_0, h_0, w, wci, wcf, wco, b, use_peephole):
    """``BlockLSTMV2``'s cell states and outputs (time-major), differentiable.

    TensorFlow (2.21) registers ``BlockLSTM``'s gradient for ``BlockLSTMV2`` too, whose
    kernel reads the gates in the other layout (input, candidate, forget, output): the
    gradient with respect to ``x`` and the weights came out wrong. This one calls
    ``BlockLSTMGradV2``, the gradient made for the op."""
    import tensorflow as tf

    length = tf.cast(tf.shape(x)[0], tf.int64)

    @tf.custom_gradient
    def run(x, c_0, h_0, w, wci, wcf, wco, b):
        inputs = {"x": x, "cs_prev": c_0, "h_prev": h_0, "w": w, "b": b}
        inputs.update(wci=wci, wcf=wcf, wco=wco, seq_len_max=length, use_peephole=use_peephole)
        i, cs, f, o, ci, co, h = tf.raw_ops.BlockLSTMV2(**inputs)

        def gradient(d_cs, d_h):
            return tf.raw_ops.BlockLSTMGradV2(
                **inputs,
                **{"i": i, "cs": cs, "f": f, "o": o, "ci": ci, "co": co, "h": h},
                cs_grad=tf.zeros_like(cs) if d_cs is None else d_cs,
                h_grad=tf.zeros_like(h) if d_h is None else d_h,
            )

        return (cs, h), gradient

    return run(x, c_0, h_0, w, wci, wcf, wco, b)


@functools.cache
def _torch_module(kind, features, units, bias, dtype, device):
    """A ``torch.nn.LSTM`` or ``GRU`` whose own weights are never used (``functional_call``
    passes ours)."""
    import torch

    module = getattr(torch.nn, kind)
    return module(features, units, bias=bias, batch_first=True, dtype=dtype, device=device)
