"""Shared test fixtures: the variant cases, random weights and data, and the oracle lookup."""

import contextlib
import functools

import keras
import numpy as np
import reference

import keras_lstm_variants as klv

BATCH, TIME, FEATURES, UNITS = 3, 6, 4, 3

#: Every variant configuration the numeric tests cover: (cell class, constructor arguments).
#: Peephole subsets are given in scrambled order on purpose: the weights must still follow
#: the documented order input, forget, output (CIFG: forget, output).
CASES = {
    "lstm": (klv.LSTMCell, {}),
    "peephole-none": (klv.PeepholeLSTMCell, {"peepholes": ()}),
    "peephole-i": (klv.PeepholeLSTMCell, {"peepholes": ("input",)}),
    "peephole-f": (klv.PeepholeLSTMCell, {"peepholes": ("forget",)}),
    "peephole-o": (klv.PeepholeLSTMCell, {"peepholes": ("output",)}),
    "peephole-oi": (klv.PeepholeLSTMCell, {"peepholes": ("output", "input")}),
    "peephole-fi": (klv.PeepholeLSTMCell, {"peepholes": ["forget", "input"]}),
    "peephole-of": (klv.PeepholeLSTMCell, {"peepholes": ("output", "forget")}),
    "peephole-all": (klv.PeepholeLSTMCell, {}),
    "cifg": (klv.CIFGLSTMCell, {}),
    "cifg-f": (klv.CIFGLSTMCell, {"peepholes": ("forget",)}),
    "cifg-o": (klv.CIFGLSTMCell, {"peepholes": ("output",)}),
    "cifg-of": (klv.CIFGLSTMCell, {"peepholes": ("output", "forget")}),
    "gru-reset-after": (klv.GRUCell, {"reset_after": True}),
    "gru-reset-before": (klv.GRUCell, {"reset_after": False}),
}

#: One representative case per variant, plus GRU's second mode.
VARIANT_CASES = ["lstm", "peephole-all", "cifg-of", "gru-reset-after", "gru-reset-before"]

LAYER_OF_CELL = dict(klv.VARIANTS.values())


def make_cell(case, **kwargs):
    cell_class, arguments = CASES[case]
    return cell_class(UNITS, **arguments, **kwargs)


def make_layer(case, **kwargs):
    cell_class, arguments = CASES[case]
    return LAYER_OF_CELL[cell_class](UNITS, **arguments, **kwargs)


def rng(seed=0):
    return np.random.default_rng(seed)


def randomize(layer, seed=0, std=0.5):
    """Give every weight of a built ``layer`` random normal values; return them (float64)."""
    generator = rng(seed)
    layer.set_weights([generator.normal(0.0, std, w.shape) for w in layer.get_weights()])
    return [w.astype(np.float64) for w in layer.get_weights()]


def data(case, seed=1, batch=BATCH, time=TIME, features=FEATURES, dtype="float32"):
    """Random inputs (batch, time, features) and non-zero initial states for ``case``."""
    generator = rng(seed)
    x = generator.normal(size=(batch, time, features)).astype(dtype)
    count = 1 if CASES[case][0] is klv.GRUCell else 2
    states = [generator.normal(0.0, 0.5, (batch, UNITS)).astype(dtype) for _ in range(count)]
    return x, states


def padding_mask(batch=BATCH, time=TIME):
    """A boolean mask whose rows are padded on the right, on the left, and not at all."""
    mask = np.ones((batch, time), dtype=bool)
    mask[0, time - 2 :] = False  # right padding
    mask[1, :2] = False  # left padding
    return mask


def reference_step(case, weights):
    """The oracle step of ``case`` with its weights bound, read in issue 2's documented order.

    LSTM: kernel, recurrent_kernel, bias. Peephole LSTM: then one vector per enabled gate in
    the order input, forget, output. CIFG: the same with forget, output. GRU: three weights.
    """
    cell_class, arguments = CASES[case]
    kernel, recurrent_kernel, bias, *peephole_weights = weights
    fused = {"kernel": kernel, "recurrent_kernel": recurrent_kernel, "bias": bias}
    if cell_class is klv.GRUCell:
        assert not peephole_weights
        return functools.partial(reference.gru_step, reset_after=arguments["reset_after"], **fused)
    if cell_class is klv.LSTMCell:
        order, default, step = (), (), reference.lstm_step
    elif cell_class is klv.PeepholeLSTMCell:  # all three peepholes by default
        order = default = ("input", "forget", "output")
        step = reference.lstm_step
    else:  # CIFG: no peepholes by default
        order, default, step = ("forget", "output"), (), reference.cifg_step
    enabled = [gate for gate in order if gate in arguments.get("peepholes", default)]
    assert len(peephole_weights) == len(enabled), "one peephole vector per enabled gate"
    return functools.partial(
        step, peepholes=dict(zip(enabled, peephole_weights, strict=True)), **fused
    )


@contextlib.contextmanager
def float64():
    """Let float64 be float64 inside (JAX truncates it to float32 unless x64 is enabled)."""
    if keras.backend.backend() != "jax":
        yield
        return
    import jax

    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)


def gradients(layer, loss, arrays):
    """Autodiff gradients of ``loss(*arrays)``, a scalar computed by calling ``layer``, with
    respect to ``arrays`` and then ``layer.trainable_weights``, on the current Keras backend
    (``tf.GradientTape``, ``jax.grad`` over a stateless call, or ``torch.autograd``)."""
    backend = keras.backend.backend()
    variables = list(layer.trainable_weights)
    if backend == "tensorflow":
        import tensorflow as tf

        tensors = [tf.constant(array) for array in arrays]
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            value = loss(*tensors)
        grads = tape.gradient(value, tensors + variables)
    elif backend == "jax":
        import jax

        def stateless_loss(tensors, values):
            with keras.StatelessScope(state_mapping=list(zip(variables, values, strict=True))):
                return loss(*tensors)

        values = [variable.value for variable in variables]
        by_array, by_weight = jax.grad(stateless_loss, argnums=(0, 1))(list(arrays), values)
        grads = [*by_array, *by_weight]
    elif backend == "torch":
        import torch

        tensors = [torch.tensor(array, requires_grad=True) for array in arrays]
        value = loss(*tensors)
        grads = torch.autograd.grad(value, tensors + [variable.value for variable in variables])
    else:
        raise NotImplementedError(f"gradients on the {backend} backend")
    return [keras.ops.convert_to_numpy(grad) for grad in grads]
