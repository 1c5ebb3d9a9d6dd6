"""Shared test fixtures: the variant cases, random weights and data, and the oracle lookup."""

import contextlib
import functools
import types

import keras
import numpy as np
import pytest
import reference

import keras_lstm_variants as klv
from keras_lstm_variants.kernels import _conditions

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


def to_numpy(value):
    """``value`` (a tensor, or a list, tuple or dict of them; ``None`` stays ``None``) as NumPy
    arrays: ``keras.ops.convert_to_numpy`` on every leaf. Tests read results through it, since
    ``np.asarray`` cannot read every backend's tensors: on torch a result that requires grad or
    lives on a GPU refuses (``convert_to_numpy`` detaches it and copies it to the CPU)."""
    return keras.tree.map_structure(
        lambda leaf: None if leaf is None else keras.ops.convert_to_numpy(leaf), value
    )


def float32_tolerance(rtol, atol):
    """``assert_allclose`` tolerances for float32 against a stepped oracle: as given, and
    ``rtol=1e-4, atol=1e-4`` at the least where the torch backend runs on a GPU. There,
    PyTorch's kernels (cuDNN, also behind the stock Keras layers) sum the same float32 products
    in another order: measured on an H100 (docs/speed-gpu.md), up to 4.8e-5 absolute in
    weight gradients of magnitude up to 5, after 6 steps. A real fault (a swapped gate block,
    a bias used twice) differs by more than 1e-2."""
    if keras.backend.backend() == "torch":
        import torch

        if torch.cuda.is_available():
            return {"rtol": max(rtol, 1e-4), "atol": max(atol, 1e-4)}
    return {"rtol": rtol, "atol": atol}


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


def gradients(layer, loss, arrays, jit_compile=False, has_aux=False):
    """Autodiff gradients of ``loss(*arrays)``, a scalar computed by calling ``layer``, with
    respect to ``arrays`` and then ``layer.trainable_weights``, on the current Keras backend
    (``tf.GradientTape``, ``jax.grad`` over a stateless call, or ``torch.autograd``). A
    gradient with no path to the loss is zeros. ``jit_compile``: compiled by XLA
    (``tf.function(jit_compile=True)``, ``jax.jit``; PyTorch has no XLA: the test skips).
    ``has_aux``: ``loss`` returns ``(scalar, aux)``; returns ``(gradients, aux)``, aux as NumPy
    arrays, from the same call."""
    backend = keras.backend.backend()
    variables = list(layer.trainable_weights)
    if backend == "tensorflow":
        import tensorflow as tf

        def run(tensors):
            with tf.GradientTape() as tape:
                tape.watch(tensors)
                value, aux = loss(*tensors) if has_aux else (loss(*tensors), None)
            grads = tape.gradient(value, tensors + variables, unconnected_gradients="zero")
            return grads, aux

        if jit_compile:
            run = tf.function(run, jit_compile=True)
        grads, aux = run([tf.constant(array) for array in arrays])
    elif backend == "jax":
        import jax

        def stateless_loss(tensors, values):
            with keras.StatelessScope(state_mapping=list(zip(variables, values, strict=True))):
                return loss(*tensors)

        grad = jax.grad(stateless_loss, argnums=(0, 1), has_aux=has_aux)
        if jit_compile:
            grad = jax.jit(grad)
        values = [variable.value for variable in variables]
        result = grad([jax.numpy.asarray(array) for array in arrays], values)
        (by_array, by_weight), aux = result if has_aux else (result, None)
        grads = [*by_array, *by_weight]
    elif backend == "torch":
        import torch

        if jit_compile:
            pytest.skip("PyTorch has no XLA (Keras's jit_compile there is torch.compile)")
        tensors = [  # on Keras's device (the GPU where there is one)
            keras.ops.convert_to_tensor(array).detach().requires_grad_() for array in arrays
        ]
        value, aux = loss(*tensors) if has_aux else (loss(*tensors), None)
        sources = tensors + [variable.value for variable in variables]
        grads = torch.autograd.grad(value, sources, allow_unused=True)
        grads = [
            torch.zeros_like(s) if g is None else g for g, s in zip(grads, sources, strict=True)
        ]
    else:
        raise NotImplementedError(f"gradients on the {backend} backend")
    grads = [keras.ops.convert_to_numpy(grad) for grad in grads]
    if has_aux:
        return grads, keras.tree.map_structure(keras.ops.convert_to_numpy, aux)
    return grads


def with_keras_rnn(layer_class, shape, dtype="float32", **arguments):
    """``layer_class(**arguments)`` built for ``shape`` with random weights (:func:`randomize`),
    and ``keras.layers.RNN`` over the same cell with the same sequence options (the oracle of
    the layers' own loops)."""
    layer = layer_class(dtype=dtype, **arguments)
    layer.build(shape)
    randomize(layer)
    options = ("return_sequences", "return_state", "go_backwards", "zero_output_for_mask")
    reference = keras.layers.RNN(
        layer.cell, dtype=dtype, **{key: getattr(layer, key) for key in options}
    )
    reference.build(shape)
    return layer, reference


def count_calls(monkeypatch, owner, name):
    """Wrap ``owner.name`` (for the test) to count its calls: the returned list grows by one
    per call (each trace counts)."""
    count = []
    original = getattr(owner, name)
    monkeypatch.setattr(owner, name, lambda *args: count.append(1) or original(*args))
    return count


def run_with_gradients(layer, x, states, mask=None, training=False, seed=7):
    """The results of ``layer(x, initial_state=states, mask=mask, training=training)`` and the
    gradients of a random linear probe of all of them with respect to ``x``, the initial
    states and every trainable weight (one call, on the current backend)."""
    generator = np.random.default_rng(seed)
    probes = []

    def loss(x, *states):
        results = layer(x, initial_state=list(states), mask=mask, training=training)
        results = list(results) if isinstance(results, (list, tuple)) else [results]
        while len(probes) < len(results):  # drawn once, on the first (or only) trace
            probes.append(generator.normal(size=results[len(probes)].shape))
        terms = [
            keras.ops.sum(r * keras.ops.convert_to_tensor(p, r.dtype))
            for r, p in zip(results, probes, strict=True)
        ]
        return sum(terms), results

    grads, results = gradients(layer, loss, [x, *states], has_aux=True)
    return results, grads


def xla(function):
    """``function`` compiled by XLA on the current backend (``tf.function(jit_compile=True)``
    or ``jax.jit``); PyTorch has no XLA: the test skips."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(function, jit_compile=True)
    if backend == "jax":
        import jax

        return jax.jit(function)
    pytest.skip(f"the {backend} backend has no XLA (Keras's jit_compile there is torch.compile)")


def float64_tolerance(rtol, atol=0.0):
    """``assert_allclose`` tolerances for a float64 comparison: as given on TensorFlow; on the
    other backends Keras computes float64 at float32 precision (``keras.ops`` results follow
    ``keras.backend.result_type``, which maps float64 to float32 off TensorFlow: Keras's
    ``dtypes.BIT64_TO_BIT32_DTYPE``; e.g. ``keras.ops.tanh`` of a float64 array is float32),
    so the comparison is float32's, 1e-5."""
    if keras.backend.backend() == "tensorflow":
        return {"rtol": rtol, "atol": atol}
    return {"rtol": max(rtol, 1e-5), "atol": max(atol, 1e-5)}


def xla_training(layer, x, states, target, steps=3):
    """A model of ``layer`` (inputs: ``x`` and the initial ``states``) compiled by Keras with
    ``jit_compile=True`` (XLA on TensorFlow and JAX; PyTorch has no XLA: the test skips) and
    mean squared error to ``target`` (Adam 0.01). Returns its compiled forward pass on ``x``
    and the losses of ``steps`` compiled training steps."""
    if keras.backend.backend() not in ("tensorflow", "jax"):
        xla(None)  # skips
    inputs = [keras.Input(x.shape[1:]), *(keras.Input(s.shape[1:]) for s in states)]
    model = keras.Model(inputs, layer(inputs[0], initial_state=inputs[1:]))
    model.compile(keras.optimizers.Adam(0.01), "mse", jit_compile=True)
    compiled = keras.ops.convert_to_numpy(model.predict_on_batch([x, *states]))
    target = np.broadcast_to(target, compiled.shape).astype(compiled.dtype)
    losses = [float(model.train_on_batch([x, *states], target)) for _ in range(steps)]
    return compiled, losses


def central_differences(evaluate, value, assign, eps=1e-6):
    """d evaluate() / d value by central differences (float64), perturbing one entry at a
    time: ``assign(perturbed)`` puts each perturbed copy of ``value`` in place before
    ``evaluate()``; ``value`` itself is assigned back at the end."""
    grad = np.zeros_like(value)
    for index in np.ndindex(value.shape):
        shifted = []
        for sign in (1.0, -1.0):
            perturbed = value.copy()
            perturbed[index] += sign * eps
            assign(perturbed)
            shifted.append(evaluate())
        grad[index] = (shifted[0] - shifted[1]) / (2 * eps)
    assign(value)
    return grad


def setter(values, k):
    """``assign`` for :func:`central_differences`: puts its argument at ``values[k]``."""
    return lambda value: values.__setitem__(k, value)


def keras_rnn_results(layer_class, shape, *, mask=None, training=False, seed=1, wrap=None, **args):
    """The results and gradients (:func:`run_with_gradients`) of ``layer_class(**args)`` and
    of ``keras.layers.RNN`` over its cell (:func:`with_keras_rnn`), both returning sequences
    and states unless ``args`` says otherwise, on the same random inputs ``shape`` and
    non-zero initial states; each flattened. ``args`` may hold ``dtype``. ``wrap(layer, x,
    states)``, if given, is what runs in place of the layer."""
    dtype = args.pop("dtype", "float32")
    args = {"return_sequences": True, "return_state": True, **args}
    layer, reference = with_keras_rnn(layer_class, shape, dtype, **args)
    assert [id(v) for v in reference.trainable_weights] == [id(v) for v in layer.trainable_weights]
    generator = np.random.default_rng(seed)
    x = generator.normal(size=shape).astype(dtype)
    states = [generator.normal(0, 0.5, (shape[0], s)).astype(dtype) for s in layer.state_size]
    count = 1 + len(states) + len(layer.trainable_weights)  # gradients: x, states, weights
    if wrap is not None:
        layer = wrap(layer, x, states)
    results = []
    for model in (layer, reference):
        outputs, grads = run_with_gradients(model, x, states, mask=mask, training=training)
        assert len(grads) == count
        results.append(keras.tree.flatten((outputs, grads)))
    return results


def assert_equals_keras_rnn(layer_class, shape, tolerance, **kwargs):
    """:func:`keras_rnn_results` of the layer equal those of ``keras.layers.RNN(cell)``:
    outputs, final states and the gradients of the inputs, initial states and every weight."""
    got, expected = keras_rnn_results(layer_class, shape, **kwargs)
    assert_all_close(got, expected, tolerance)


def assert_all_close(got, expected, tolerance):
    """Each array of ``got`` equals the one at its place in ``expected`` (as many of them) to
    ``tolerance`` (``assert_allclose``'s ``rtol`` and ``atol``)."""
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a, b, **tolerance)


def kernels_decide_as(monkeypatch, backend):
    """The kernels decide as on ``backend`` (Keras itself stays on its own)."""
    monkeypatch.setattr(_conditions, "backend", types.SimpleNamespace(backend=lambda: backend))


#: The refusal cases several kernels share: case -> (the layer options that make it, words of
#: the reason each kernel that checks it gives, from kernels/_conditions.py). A kernel's test
#: lists the cases it refuses (:func:`refusal_reasons`), adding its own words where they say more.
REFUSALS = {
    "layer_norm": ({"layer_norm": True}, "layer_norm is on"),
    "proj_units": ({"proj_units": 3}, "proj_units is on"),
    "cell_clip": ({"cell_clip": 1.0}, "cell_clip is on"),
    "relu": ({"activation": "relu"}, "activation is not tanh"),
    "hard_sigmoid": (
        {"recurrent_activation": "hard_sigmoid"},
        "recurrent_activation is not sigmoid",
    ),
    "reset_before": ({"reset_after": False}, "reset_after=False"),
    "use_cudnn": ({"use_cudnn": False}, "use_cudnn=False"),
    "mixed_float16": ({"dtype": "mixed_float16"}, "mixed precision"),
    "zoneout": ({"zoneout": 0.1}, "zoneout is on"),
    "dropout": ({"dropout": 0.1}, "dropout"),
    "recurrent_dropout": ({"recurrent_dropout": 0.1}, "dropout"),
    "unroll": ({"unroll": True}, "unroll=True"),
    "mask": ({}, "a mask is given"),
    "unknown time": ({}, "the number of steps is unknown"),
}


def refusal_reasons(*cases, prefix=""):
    """``{prefix + case: words of its reason}`` for shared ``cases`` (:data:`REFUSALS`)."""
    return {prefix + case: REFUSALS[case][1] for case in cases}


def refusal_options(case):
    """The layer options of refusal ``case`` (:data:`REFUSALS`; a case named ``gru-NAME`` takes
    NAME's); none for a case that is no option (a backend, a cell class)."""
    return REFUSALS.get(case.removeprefix("gru-"), ({}, None))[0]


class KeepsStep(klv.LSTMCell):
    """A user's subclass that keeps the step (it adds a config entry only): it keeps the
    capabilities, and so the kernels."""

    def get_config(self):
        return {**super().get_config(), "note": "mine"}


class ChangesStep(klv.LSTMCell):
    """A user's subclass that changes the step (halves ``h``): it loses the capabilities, and
    Keras's loop steps it."""

    def transition(self, z_x, states, training=False):
        gates, (h, c) = super().transition(z_x, states, training)
        return gates, [0.5 * h, c]


def over(cell_class, base=klv.LSTM):
    """A sequence layer (a subclass of ``base``) over ``cell_class``."""
    return type(f"Over{cell_class.__name__}", (base,), {"cell_class": cell_class})


#: How every command that runs trials (compare, study) refuses bad trial options
#: (commands/trials.py): (arguments, words of the one-line error).
TRIAL_OPTION_REFUSALS = [
    (["--threads", "0"], "--threads: must be a positive integer; received 0"),
    (["--gpus-per-trial", "2"], "--gpus-per-trial: must be from 0 to 1; received 2.0"),
]


def assert_refused(command, message, capsys):
    """``keras-lstm-variants`` with ``command`` (its arguments) exits 2 with one line on
    stderr holding ``message``, and no traceback."""
    from keras_lstm_variants.commands import cli

    code = cli.main(command)
    error = capsys.readouterr().err
    assert code == 2
    assert message in error and "Traceback" not in error
    assert len(error.strip().splitlines()) == 1


def non_default_settings_of_every_cell():
    """Non-default values of the arguments every cell takes (new objects at each call), for
    config round trips: a setting lost on the way shows."""
    return {
        "recurrent_activation": "hard_sigmoid",
        "kernel_initializer": keras.initializers.RandomNormal(stddev=0.3, seed=1),
        "kernel_regularizer": keras.regularizers.L2(0.01),
        "recurrent_constraint": keras.constraints.MaxNorm(2.0),
        "dropout": 0.25,
        "recurrent_dropout": 0.125,
        "seed": 5,
    }
