"""NumPy transcriptions of each paper's equations: the independent oracle of the tests.

Written from the papers (and the weight layouts of issue 2), never by calling the package, so
a wrong gate order, a peephole on the wrong cell state or a mis-sliced bias in the package
disagrees with these functions. Everything runs in float64.

Weight layouts (``keras.layers.LSTMCell`` / ``GRUCell``): ``kernel`` ``(features, k * units)``
and ``recurrent_kernel`` ``(units, k * units)`` hold ``k`` column blocks side by side:

* LSTM and peephole LSTM: i, f, g, o; ``bias`` ``(4 * units,)``.
* CIFG: f, g, o; ``bias`` ``(3 * units,)``.
* GRU: z, r, h; ``bias`` ``(3 * units,)``, or ``(2, 3 * units)`` (input row, recurrent row)
  with ``reset_after``.
"""

import functools

import numpy as np

LSTM_BLOCKS = ("input", "forget", "candidate", "output")


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _named_blocks(names, kernel, recurrent_kernel, bias):
    """Split the fused weights into per-gate ``W``, ``U``, ``b`` dicts keyed by ``names``."""
    return (
        dict(zip(names, np.split(weight, len(names), axis=-1)))
        for weight in (kernel, recurrent_kernel, bias)
    )


def lstm_step(
    x, states, kernel, recurrent_kernel, bias, peepholes=None, recurrent_mask=1.0, coupled=False
):
    """One step of the LSTM; with ``peepholes``, of the peephole LSTM; ``coupled``: CIFG.

    Hochreiter & Schmidhuber 1997 with the forget gate of Gers et al. 2000; peepholes from
    Gers & Schmidhuber 2000 ("Recurrent nets that time and count"): the input and forget
    gates look at c_{t-1}, the output gate at the new c_t::

        i = sigmoid(W_i x + U_i h + p_i * c_prev + b_i)
        f = sigmoid(W_f x + U_f h + p_f * c_prev + b_f)
        g = tanh(W_g x + U_g h + b_g)
        c = f * c_prev + i * g
        o = sigmoid(W_o x + U_o h + p_o * c + b_o)
        h = o * tanh(c)

    With ``coupled=True``, the LSTM with coupled input and forget gates (CIFG, Greff et al.
    2017): three weight blocks f, g, o and ``i = 1 - f``.

    ``peepholes`` maps gate names ("input", "forget", "output") to (units,) vectors; a gate
    not in it has no peephole. ``recurrent_mask`` multiplies h_{t-1} where it enters U h.
    Returns ``(gates, (h, c))``.
    """
    h_prev, c_prev = states
    p = peepholes or {}
    h_in = h_prev * recurrent_mask
    names = ("forget", "candidate", "output") if coupled else LSTM_BLOCKS
    W, U, b = _named_blocks(names, kernel, recurrent_kernel, bias)

    def z(gate):
        return x @ W[gate] + h_in @ U[gate] + b[gate]

    f = sigmoid(z("forget") + p.get("forget", 0.0) * c_prev)
    i = 1.0 - f if coupled else sigmoid(z("input") + p.get("input", 0.0) * c_prev)
    g = np.tanh(z("candidate"))
    c = f * c_prev + i * g
    o = sigmoid(z("output") + p.get("output", 0.0) * c)
    h = o * np.tanh(c)
    return {"input": i, "forget": f, "candidate": g, "output": o}, (h, c)


#: CIFG: :func:`lstm_step` with ``i = 1 - f`` (peepholes may hold "forget" and/or "output").
cifg_step = functools.partial(lstm_step, coupled=True)


def gru_step(x, states, kernel, recurrent_kernel, bias, reset_after=True, recurrent_mask=1.0):
    """One step of the GRU (Cho et al. 2014).

    ``reset_after=False`` is the paper; ``reset_after=True`` applies the reset gate after the
    recurrent product, which carries its own bias b' (the second row of ``bias``)::

        z = sigmoid(W_z x + b_z + U_z h + b'_z)
        r = sigmoid(W_r x + b_r + U_r h + b'_r)
        h_tilde = tanh(W_h x + b_h + U_h (r * h))            # reset_after=False, b' = 0
        h_tilde = tanh(W_h x + b_h + r * (U_h h + b'_h))     # reset_after=True
        h = z * h_prev + (1 - z) * h_tilde

    ``recurrent_mask`` multiplies h_{t-1} inside the recurrent products only; the final
    interpolation uses the true h_{t-1}. Returns ``(gates, (h,))``.
    """
    (h_prev,) = states
    h_in = h_prev * recurrent_mask
    if reset_after:
        input_bias, recurrent_bias = bias[0], bias[1]
    else:
        input_bias, recurrent_bias = bias, np.zeros_like(bias)
    W_z, W_r, W_h = np.split(kernel, 3, axis=1)
    U_z, U_r, U_h = np.split(recurrent_kernel, 3, axis=1)
    b_z, b_r, b_h = np.split(input_bias, 3)
    bb_z, bb_r, bb_h = np.split(recurrent_bias, 3)
    z = sigmoid(x @ W_z + b_z + h_in @ U_z + bb_z)
    r = sigmoid(x @ W_r + b_r + h_in @ U_r + bb_r)
    if reset_after:
        h_tilde = np.tanh(x @ W_h + b_h + r * (h_in @ U_h + bb_h))
    else:
        h_tilde = np.tanh(x @ W_h + b_h + (r * h_in) @ U_h)
    h = z * h_prev + (1.0 - z) * h_tilde
    return {"update": z, "reset": r, "candidate": h_tilde}, (h,)


def run(step, inputs, states, input_mask=1.0, go_backwards=False, **weights):
    """Run ``step`` over ``inputs`` (batch, time, features) from ``states``.

    ``input_mask`` multiplies every step's input (one dropout mask per sequence, as in Gal &
    Ghahramani 2016); ``weights`` go to ``step``. Returns ``(outputs, final_states)`` with
    ``outputs`` (batch, time, units) in processing order (reversed when ``go_backwards``),
    as ``keras.layers.RNN`` returns them.
    """
    inputs = np.asarray(inputs, dtype=np.float64)
    states = tuple(np.asarray(s, dtype=np.float64) for s in states)
    times = range(inputs.shape[1])
    outputs = []
    for t in reversed(times) if go_backwards else times:
        _, states = step(inputs[:, t] * input_mask, states, **weights)
        outputs.append(states[0])
    return np.stack(outputs, axis=1), states
