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
import os

import numpy as np

LSTM_BLOCKS = ("input", "forget", "candidate", "output")


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _named_blocks(names, kernel, recurrent_kernel, bias):
    """Split the fused weights into per-gate ``W``, ``U``, ``b`` dicts keyed by ``names``."""
    return (
        dict(zip(names, np.split(weight, len(names), axis=-1), strict=True))
        for weight in (kernel, recurrent_kernel, bias)
    )


def layer_norm(z, gamma, beta, epsilon=1e-3):
    """Ba, Kiros & Hinton 2016: normalize ``z`` over its last axis, then gain and bias."""
    mean = z.mean(axis=-1, keepdims=True)
    variance = ((z - mean) ** 2).mean(axis=-1, keepdims=True)
    return gamma * (z - mean) / np.sqrt(variance + epsilon) + beta


def zoneout(new, previous, d):
    """Krueger et al. 2017: ``d * previous + (1 - d) * new``. ``d`` is the training mask
    (1 = keep the previous value) or, at inference, the probability itself (the expectation)."""
    return d * previous + (1.0 - d) * new


def lstm_step(
    x,
    states,
    kernel,
    recurrent_kernel,
    bias,
    peepholes=None,
    recurrent_mask=1.0,
    coupled=False,
    norms=None,
    epsilon=1e-3,
    projection=None,
    cell_clip=None,
    proj_clip=None,
    zoneout_d=(0.0, 0.0),
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

    The production options (issue 9), each off by default:

    * ``norms``: layer normalization (Ba et al. 2016, their LSTM) -- a dict with (gamma,
      beta) pairs under "kernel", "recurrent", "cell": the fused pre-activations are
      ``LN(W x) + LN(U h) + b`` and ``h = o * tanh(LN(c))``; the unnormalized c is carried.
    * ``projection`` (units, P): LSTMP (Sak et al. 2014), ``h = (o * tanh(c)) @ projection``,
      then clipped to +-``proj_clip``; h (P wide) is what enters ``U h`` next step.
    * ``cell_clip``: c clipped to +-cell_clip right after its update (TF LSTMBlockCell),
      before the output peephole and h.
    * ``zoneout_d`` = (d_c, d_h): Krueger et al. 2017, ``c = d_c * c_prev + (1 - d_c) * c``
      and ``h = d_h * h_prev + (1 - d_h) * h``, where h was computed from the new c (not
      the zoned-out one). Masks in training, the probabilities at inference.

    Returns ``(gates, (h, c))``.
    """
    h_prev, c_prev = states
    p = peepholes or {}
    h_in = h_prev * recurrent_mask
    names = ("forget", "candidate", "output") if coupled else LSTM_BLOCKS
    z_x, z_h = x @ kernel, h_in @ recurrent_kernel
    if norms:
        z_x = layer_norm(z_x, *norms["kernel"], epsilon)
        z_h = layer_norm(z_h, *norms["recurrent"], epsilon)
    z = dict(zip(names, np.split(z_x + z_h + bias, len(names), axis=-1), strict=True))

    f = sigmoid(z["forget"] + p.get("forget", 0.0) * c_prev)
    i = 1.0 - f if coupled else sigmoid(z["input"] + p.get("input", 0.0) * c_prev)
    g = np.tanh(z["candidate"])
    c = f * c_prev + i * g
    if cell_clip is not None:
        c = np.clip(c, -cell_clip, cell_clip)
    o = sigmoid(z["output"] + p.get("output", 0.0) * c)
    h = o * np.tanh(layer_norm(c, *norms["cell"], epsilon) if norms else c)
    if projection is not None:
        h = h @ projection
        if proj_clip is not None:
            h = np.clip(h, -proj_clip, proj_clip)
    d_c, d_h = zoneout_d
    h, c = zoneout(h, h_prev, d_h), zoneout(c, c_prev, d_c)
    return {"input": i, "forget": f, "candidate": g, "output": o}, (h, c)


#: CIFG: :func:`lstm_step` with ``i = 1 - f`` (peepholes may hold "forget" and/or "output").
cifg_step = functools.partial(lstm_step, coupled=True)


def gru_step(
    x,
    states,
    kernel,
    recurrent_kernel,
    bias,
    reset_after=True,
    recurrent_mask=1.0,
    norms=None,
    epsilon=1e-3,
    zoneout_d=0.0,
):
    """One step of the GRU (Cho et al. 2014).

    ``reset_after=False`` is the paper; ``reset_after=True`` applies the reset gate after the
    recurrent product, which carries its own bias b' (the second row of ``bias``)::

        z = sigmoid(W_z x + b_z + U_z h + b'_z)
        r = sigmoid(W_r x + b_r + U_r h + b'_r)
        h_tilde = tanh(W_h x + b_h + U_h (r * h))            # reset_after=False, b' = 0
        h_tilde = tanh(W_h x + b_h + r * (U_h h + b'_h))     # reset_after=True
        h = z * h_prev + (1 - z) * h_tilde

    ``recurrent_mask`` multiplies h_{t-1} inside the recurrent products only; the final
    interpolation uses the true h_{t-1}.

    ``norms`` (reset_after only): layer normalization (Ba et al. 2016) of each whole product,
    a dict of (gamma, beta) under "kernel" and "recurrent": ``LN(W x) + b`` and
    ``LN(U h) + b'`` replace ``W x + b`` and ``U h + b'``. ``zoneout_d``: Krueger et al.'s
    ``h = d * h_prev + (1 - d) * h`` (a mask in training, the probability at inference).
    Returns ``(gates, (h,))``.
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
    if norms:
        assert reset_after, "layer norm is defined for reset_after=True"
        w = layer_norm(x @ kernel, *norms["kernel"], epsilon) + input_bias
        x_z, x_r, x_h = np.split(w, 3, axis=-1)
        u = layer_norm(h_in @ recurrent_kernel, *norms["recurrent"], epsilon) + recurrent_bias
        u_z, u_r, u_h = np.split(u, 3, axis=-1)
        z, r = sigmoid(x_z + u_z), sigmoid(x_r + u_r)
        h_tilde = np.tanh(x_h + r * u_h)
    else:
        z = sigmoid(x @ W_z + b_z + h_in @ U_z + bb_z)
        r = sigmoid(x @ W_r + b_r + h_in @ U_r + bb_r)
        if reset_after:
            h_tilde = np.tanh(x @ W_h + b_h + r * (h_in @ U_h + bb_h))
        else:
            h_tilde = np.tanh(x @ W_h + b_h + (r * h_in) @ U_h)
    h = zoneout(z * h_prev + (1.0 - z) * h_tilde, h_prev, zoneout_d)
    return {"update": z, "reset": r, "candidate": h_tilde}, (h,)


#: Keras's rule for the output at masked steps *before a sequence's first step* depends on the
#: backend: zeros on TensorFlow and torch, the initial ``h`` on JAX (the stock
#: ``keras.layers.LSTM`` does the same; measured), except JAX's unrolled loop, which gives
#: zeros (``keras/src/backend/jax/rnn.py``). The oracle follows the backend under test.
LEADING_OUTPUT_IS_STATE = os.environ.get("KERAS_BACKEND", "tensorflow") == "jax"


def run(
    step, inputs, states, input_mask=1.0, go_backwards=False, mask=None, unroll=False, **weights
):
    """Run ``step`` over ``inputs`` (batch, time, features) from ``states``.

    ``input_mask`` multiplies every step's input (one dropout mask per sequence, as in Gal &
    Ghahramani 2016); ``weights`` go to ``step``. ``mask`` (batch, time), False at padded
    steps: there a sequence keeps its states and repeats its previous output (before its
    first step: zeros, or the initial ``h`` on JAX unless ``unroll``, see
    :data:`LEADING_OUTPUT_IS_STATE`), Keras's rule. Returns ``(outputs, final_states)`` with
    ``outputs`` (batch, time, units) in processing order (reversed when ``go_backwards``), as
    ``keras.layers.RNN`` returns them.
    """
    inputs = np.asarray(inputs, dtype=np.float64)
    states = tuple(np.asarray(s, dtype=np.float64) for s in states)
    times = range(inputs.shape[1])
    outputs = []
    for t in reversed(times) if go_backwards else times:
        _, new_states = step(inputs[:, t] * input_mask, states, **weights)
        if mask is None:
            states, output = new_states, new_states[0]
        else:
            keep = np.asarray(mask, dtype=bool)[:, t : t + 1]
            before = states[0] if LEADING_OUTPUT_IS_STATE and not unroll else 0.0
            output = np.where(keep, new_states[0], outputs[-1] if outputs else before)
            pairs = zip(new_states, states, strict=True)
            states = tuple(np.where(keep, new, old) for new, old in pairs)
        outputs.append(output)
    return np.stack(outputs, axis=1), states


#: Greff et al. 2017, section III: what each configuration changes in the vanilla LSTM (V).
GREFF_CHANGES = {
    "V": {},
    "NIG": {"input_gate": False},
    "NFG": {"forget_gate": False},
    "NOG": {"output_gate": False},
    "NIAF": {"input_activation": False},
    "NOAF": {"output_activation": False},
    "NP": {"has_peepholes": False},
    "CIFG": {"coupled": True},
    "FGR": {"gate_recurrence": True},
}


def greff_layout(
    input_gate=True, forget_gate=True, output_gate=True, coupled=False, has_peepholes=True, **_
):
    """``(blocks, peephole gates)`` of a Greff configuration given its changes (issue 9).

    The weight blocks are the computed gates and the candidate, in the order input, forget,
    candidate, output (CIFG computes f from i: no forget block); every computed sigmoid gate
    has a peephole (order input, forget, output), except in NP.
    """
    computed = {
        "input": input_gate,
        "forget": forget_gate and not coupled,
        "candidate": True,
        "output": output_gate,
    }
    blocks = tuple(gate for gate in LSTM_BLOCKS if computed[gate])
    peepholes = tuple(g for g in blocks if g != "candidate") if has_peepholes else ()
    return blocks, peepholes


def greff_step(
    x,
    states,
    kernel,
    recurrent_kernel,
    bias,
    peepholes=None,
    gate_recurrent_kernel=None,
    input_gate=True,
    forget_gate=True,
    output_gate=True,
    input_activation=True,
    output_activation=True,
    coupled=False,
    recurrent_mask=1.0,
    norms=None,
    epsilon=1e-3,
    projection=None,
    cell_clip=None,
    proj_clip=None,
    zoneout_d=(0.0, 0.0),
):
    """One step of Greff et al. 2017's LSTM and its eight variants (sections II and III).

    The vanilla LSTM, in the paper's names (block input z, output y, recurrent weights R)::

        z = g(W_z x + R_z y_prev + b_z)                        g = tanh; NIAF: identity
        i = sigmoid(W_i x + R_i y_prev + p_i * c_prev + b_i)   NIG: i = 1
        f = sigmoid(W_f x + R_f y_prev + p_f * c_prev + b_f)   NFG: f = 1; CIFG: f = 1 - i
        c = z * i + c_prev * f
        o = sigmoid(W_o x + R_o y_prev + p_o * c + b_o)        NOG: o = 1
        y = h(c) * o                                           h = tanh; NOAF: identity

    NP: no peephole terms (``peepholes`` empty). FGR (``gate_recurrent_kernel`` (3u, 3u),
    rows i_prev, f_prev, o_prev, column blocks i, f, o): the pre-activation of each gate
    a in (i, f, o) also gets R_ia i_prev + R_fa f_prev + R_oa o_prev, and the state is
    (y, c, [i, f, o]). The fused weights' blocks are those of :func:`greff_layout`.

    The options, as in :func:`lstm_step`: ``norms`` (layer norm of W x and R y_prev over the
    fused blocks, and of c inside h; FGR's gate term is added after the normalized sum),
    ``projection`` / ``proj_clip`` on y, ``cell_clip`` on c before o and y, ``zoneout_d``
    = (d_c, d_h) on the carried c and y (not on FGR's gates).
    Returns ``(gates, new_states)``; ``gates`` holds the gates the variant has (CIFG: i, f).
    """
    y_prev, c_prev = states[0], states[1]
    p = peepholes or {}
    y_in = y_prev * recurrent_mask
    blocks, _ = greff_layout(input_gate, forget_gate, output_gate, coupled)
    z_x, z_h = x @ kernel, y_in @ recurrent_kernel
    if norms:
        z_x = layer_norm(z_x, *norms["kernel"], epsilon)
        z_h = layer_norm(z_h, *norms["recurrent"], epsilon)
    bar = dict(zip(blocks, np.split(z_x + z_h + bias, len(blocks), axis=-1), strict=True))
    if gate_recurrent_kernel is not None:
        # R_gates[source][target]: the (u, u) matrix from gate `source` at t-1 to `target`.
        previous = np.split(states[2], 3, axis=-1)
        R_gates = [np.split(row, 3, axis=1) for row in np.split(gate_recurrent_kernel, 3, axis=0)]
        for target, gate in enumerate(("input", "forget", "output")):
            for source, gate_prev in enumerate(previous):
                bar[gate] = bar[gate] + gate_prev @ R_gates[source][target]
    z = np.tanh(bar["candidate"]) if input_activation else bar["candidate"]
    i = sigmoid(bar["input"] + p.get("input", 0.0) * c_prev) if input_gate else 1.0
    if coupled:
        f = 1.0 - i
    else:
        f = sigmoid(bar["forget"] + p.get("forget", 0.0) * c_prev) if forget_gate else 1.0
    c = z * i + c_prev * f
    if cell_clip is not None:
        c = np.clip(c, -cell_clip, cell_clip)
    o = sigmoid(bar["output"] + p.get("output", 0.0) * c) if output_gate else 1.0
    c_out = layer_norm(c, *norms["cell"], epsilon) if norms else c
    y = (np.tanh(c_out) if output_activation else c_out) * o
    if projection is not None:
        y = y @ projection
        if proj_clip is not None:
            y = np.clip(y, -proj_clip, proj_clip)
    d_c, d_h = zoneout_d
    y, c = zoneout(y, y_prev, d_h), zoneout(c, c_prev, d_c)
    gates = {"input": i, "forget": f, "candidate": z, "output": o}
    gates = {name: gate for name, gate in gates.items() if not np.isscalar(gate)}
    if gate_recurrent_kernel is not None:
        return gates, (y, c, np.concatenate([i, f, o], axis=-1))
    return gates, (y, c)


# ------------------------------------------------ minGRU / minLSTM (Feng et al. 2024)
def min_g(x):
    """Feng et al. 2024's g: x + 1/2 for x >= 0, sigmoid(x) otherwise (keeps h~ positive)."""
    return np.where(x >= 0, x + 0.5, sigmoid(x))


def min_gru_step(x, states, kernel, bias, log_space=True):
    """One step of minGRU (Feng et al. 2024, "Were RNNs All We Needed?", arXiv:2410.01201,
    sequential mode; kernel blocks z, h)::

        z = sigmoid(W_z x + b_z)
        h_tilde = g(W_h x + b_h)        # log_space=True (the paper's code); else W_h x + b_h
        h = (1 - z) * h_prev + z * h_tilde

    Returns ``(gates, (h,))``.
    """
    (h_prev,) = states
    W_z, W_h = np.split(kernel, 2, axis=1)
    b_z, b_h = np.split(bias, 2)
    z = sigmoid(x @ W_z + b_z)
    h_tilde = min_g(x @ W_h + b_h) if log_space else x @ W_h + b_h
    h = (1.0 - z) * h_prev + z * h_tilde
    return {"update": z}, (h,)


def min_lstm_step(x, states, kernel, bias, log_space=True):
    """One step of minLSTM (Feng et al. 2024, sequential mode; kernel blocks i, f, h)::

        f = sigmoid(W_f x + b_f)
        i = sigmoid(W_i x + b_i)
        h_tilde = g(W_h x + b_h)        # log_space=True (the paper's code); else W_h x + b_h
        f' = f / (f + i)
        i' = i / (f + i)
        h = f' * h_prev + i' * h_tilde

    Returns ``({"forget": f', "input": i'}, (h,))``.
    """
    (h_prev,) = states
    W_i, W_f, W_h = np.split(kernel, 3, axis=1)
    b_i, b_f, b_h = np.split(bias, 3)
    f = sigmoid(x @ W_f + b_f)
    i = sigmoid(x @ W_i + b_i)
    h_tilde = min_g(x @ W_h + b_h) if log_space else x @ W_h + b_h
    f_prime = f / (f + i)
    i_prime = i / (f + i)
    h = f_prime * h_prev + i_prime * h_tilde
    return {"forget": f_prime, "input": i_prime}, (h,)


def softplus(x):
    return np.logaddexp(0.0, x)


def min_log_g(x):
    """log g(x), as the paper's code writes it."""
    return np.where(x >= 0, np.log(np.maximum(x, 0.0) + 0.5), -softplus(-x))


def parallel_scan_log(log_coeffs, log_values):
    """The paper's parallel scan in log space (Heinsen 2023), transcribed from its code::

        a_star = pad(cumsum(log_coeffs, time), one leading zero step)
        log_h0_plus_b_star = logcumsumexp(log_values - a_star, time)
        log_h = a_star + log_h0_plus_b_star
        return exp(log_h)[:, 1:]

    ``log_coeffs`` (batch, T, units); ``log_values`` (batch, T + 1, units), log h_0 first.
    """
    a_star = np.pad(np.cumsum(log_coeffs, axis=1), ((0, 0), (1, 0), (0, 0)))
    log_h0_plus_b_star = np.logaddexp.accumulate(log_values - a_star, axis=1)
    log_h = a_star + log_h0_plus_b_star
    return np.exp(log_h)[:, 1:]


def min_gru_parallel(x, h_0, kernel, bias):
    """minGRU over a whole sequence in the paper's parallel log-space mode (its code)::

        k = W_z x + b_z
        log_z = -softplus(-k);  log_coeffs = -softplus(k)
        log_h_0 = log(h_0);  log_tilde_h = log_g(W_h x + b_h)
        h = parallel_scan_log(log_coeffs, concat([log_h_0, log_z + log_tilde_h], time))

    ``h_0`` must be positive (its log is taken). Returns h (batch, T, units).
    """
    W_z, W_h = np.split(kernel, 2, axis=1)
    b_z, b_h = np.split(bias, 2)
    k = x @ W_z + b_z
    log_z, log_coeffs = -softplus(-k), -softplus(k)
    log_tilde_h = min_log_g(x @ W_h + b_h)
    log_values = np.concatenate([np.log(h_0)[:, None], log_z + log_tilde_h], axis=1)
    return parallel_scan_log(log_coeffs, log_values)


def min_lstm_parallel(x, h_0, kernel, bias):
    """minLSTM over a whole sequence in the paper's parallel log-space mode (its code)::

        diff = softplus(-(W_f x + b_f)) - softplus(-(W_i x + b_i))
        log_f = -softplus(diff);  log_i = -softplus(-diff)
        log_h_0 = log(h_0);  log_tilde_h = log_g(W_h x + b_h)
        h = parallel_scan_log(log_f, concat([log_h_0, log_i + log_tilde_h], time))

    ``h_0`` must be positive. Returns h (batch, T, units).
    """
    W_i, W_f, W_h = np.split(kernel, 3, axis=1)
    b_i, b_f, b_h = np.split(bias, 3)
    diff = softplus(-(x @ W_f + b_f)) - softplus(-(x @ W_i + b_i))
    log_f, log_i = -softplus(diff), -softplus(-diff)
    log_tilde_h = min_log_g(x @ W_h + b_h)
    log_values = np.concatenate([np.log(h_0)[:, None], log_i + log_tilde_h], axis=1)
    return parallel_scan_log(log_f, log_values)


# ------------------------------------------------------------------------ xLSTM (Beck et al.)
# Beck et al. 2024, "xLSTM: Extended Long Short-Term Memory" (arXiv 2405.04517), sections 2.2,
# 2.3 and appendix A. Layouts: sLSTM ``kernel`` (features, 4 * units) with blocks i, f, z, o
# (heads in order inside each block), ``recurrent_kernel`` (heads, d, 4 * d): head k maps its
# d units of h to its own i, f, z, o columns; ``bias`` (4 * units,). mLSTM ``kernel``
# (features, 4 * units + 2 * heads) with blocks q, k, v (units each), i, f (heads each),
# o (units); ``bias`` likewise; C per head (d x d), rows indexed by v, columns by k.


def log_forget(f_tilde, forget_activation):
    """log f: log sigmoid(f~) or, for the exponential forget gate, f~ itself."""
    return f_tilde if forget_activation == "exp" else -np.logaddexp(0.0, -f_tilde)


def slstm_step(x, states, kernel, recurrent_kernel, bias, num_heads=1, forget_activation="sigmoid"):
    """One stabilized sLSTM step (eqs. 8-17)::

        z~, i~, f~, o~ = W x + R h_prev + b          (R block-diagonal over heads)
        m = max(log f + m_prev, i~)                  (m = i~ on a fresh state, n_prev = 0)
        i' = exp(i~ - m);  f' = exp(log f + m_prev - m)
        c = f' c_prev + i' tanh(z~);  n = f' n_prev + i';  h = sigmoid(o~) c / n

    Returns ``(gates, (h, c, n, m))`` with gates i', f', z, o.
    """
    h_prev, c_prev, n_prev, m_prev = states
    units = h_prev.shape[-1]
    d = units // num_heads
    R = np.zeros((units, 4 * units))  # the block-diagonal matrix, written out
    for k in range(num_heads):
        for g in range(4):
            R[k * d : (k + 1) * d, g * units + k * d : g * units + (k + 1) * d] = recurrent_kernel[
                k
            ][:, g * d : (g + 1) * d]
    pre = x @ kernel + h_prev @ R + bias
    i_tilde, f_tilde, z_tilde, o_tilde = np.split(pre, 4, axis=-1)
    lf = log_forget(f_tilde, forget_activation)
    m = np.where(n_prev == 0, i_tilde, np.maximum(lf + m_prev, i_tilde))
    i = np.exp(i_tilde - m)
    f = np.exp(np.minimum(lf + m_prev - m, 0.0))  # the cap acts on a fresh state only
    z = np.tanh(z_tilde)
    o = sigmoid(o_tilde)
    c = f * c_prev + i * z
    n = f * n_prev + i
    h = o * c / n
    return {"input": i, "forget": f, "candidate": z, "output": o}, (h, c, n, m)


def slstm_step_unstabilized(
    x, states, kernel, recurrent_kernel, bias, num_heads=1, forget_activation="sigmoid"
):
    """The sLSTM as first written (eqs. 8-14), no stabilizer: state ``(h, c, n)``.

    i = exp(i~), f = sigmoid(f~) or exp(f~), c = f c + i z, n = f n + i, h = o c / n.
    """
    h_prev, c_prev, n_prev = states
    units = h_prev.shape[-1]
    d = units // num_heads
    pre = x @ kernel + bias
    for k in range(num_heads):  # R h, head by head
        heads = slice(k * d, (k + 1) * d)
        recurrent = h_prev[:, heads] @ recurrent_kernel[k]
        for g in range(4):
            pre[:, g * units + k * d : g * units + (k + 1) * d] += recurrent[:, g * d : (g + 1) * d]
    i_tilde, f_tilde, z_tilde, o_tilde = np.split(pre, 4, axis=-1)
    i = np.exp(i_tilde)
    f = np.exp(log_forget(f_tilde, forget_activation))
    c = f * c_prev + i * np.tanh(z_tilde)
    n = f * n_prev + i
    h = sigmoid(o_tilde) * c / n
    return {}, (h, c, n)


def _mlstm_projections(x, kernel, bias, num_heads):
    units = (kernel.shape[1] - 2 * num_heads) // 4
    pre = x @ kernel + bias
    q, k, v = (pre[:, j * units : (j + 1) * units] for j in range(3))
    i_tilde = pre[:, 3 * units : 3 * units + num_heads]
    f_tilde = pre[:, 3 * units + num_heads : 3 * units + 2 * num_heads]
    o = sigmoid(pre[:, 3 * units + 2 * num_heads :])
    return units, units // num_heads, q, k, v, i_tilde, f_tilde, o


def mlstm_step(x, states, kernel, bias, num_heads=1, forget_activation="sigmoid"):
    """One stabilized mLSTM step (eqs. 19-27 with appendix A.3's stabilizer), head by head::

        q = W_q x + b_q;  k = (W_k x + b_k) / sqrt(d);  v = W_v x + b_v
        m = max(log f + m_prev, i~);  i' = exp(i~ - m);  f' = exp(log f + m_prev - m)
        C = f' C_prev + i' v k^T;  n = f' n_prev + i' k
        h = sigmoid(o~) * C q / max(|n^T q|, exp(-m))

    States ``(h, C, n, m)`` with C flattened to (batch, heads * d * d), m (batch, heads).
    Returns ``(gates, states)`` with gates i', f' (repeated over each head's units) and o.
    """
    _, C_prev, n_prev, m_prev = states
    units, d, q, k, v, i_tilde, f_tilde, o = _mlstm_projections(x, kernel, bias, num_heads)
    k = k / np.sqrt(d)
    batch = x.shape[0]
    h = np.zeros((batch, units))
    C = np.zeros_like(C_prev)
    n = np.zeros_like(n_prev)
    lf = log_forget(f_tilde, forget_activation)
    m = np.maximum(lf + m_prev, i_tilde)
    i = np.exp(i_tilde - m)
    f = np.exp(lf + m_prev - m)
    for b in range(batch):
        for head in range(num_heads):
            unit = slice(head * d, (head + 1) * d)
            cell = slice(head * d * d, (head + 1) * d * d)
            C_bh = f[b, head] * C_prev[b, cell].reshape(d, d) + i[b, head] * np.outer(
                v[b, unit], k[b, unit]
            )
            n_bh = f[b, head] * n_prev[b, unit] + i[b, head] * k[b, unit]
            denominator = max(abs(n_bh @ q[b, unit]), np.exp(-m[b, head]))
            h[b, unit] = o[b, unit] * (C_bh @ q[b, unit]) / denominator
            C[b, cell], n[b, unit] = C_bh.reshape(-1), n_bh
    gates = {"input": np.repeat(i, d, axis=-1), "forget": np.repeat(f, d, axis=-1), "output": o}
    return gates, (h, C, n, m)


def mlstm_step_unstabilized(x, states, kernel, bias, num_heads=1, forget_activation="sigmoid"):
    """The mLSTM as first written (eqs. 19-27), no stabilizer: state ``(h, C, n)``;
    ``h = o * C q / max(|n^T q|, 1)``."""
    _, C_prev, n_prev = states
    units, d, q, k, v, i_tilde, f_tilde, o = _mlstm_projections(x, kernel, bias, num_heads)
    k = k / np.sqrt(d)
    i = np.exp(i_tilde)
    f = np.exp(log_forget(f_tilde, forget_activation))
    batch = x.shape[0]
    C_prev = C_prev.reshape(batch, num_heads, d, d)
    n_prev = n_prev.reshape(batch, num_heads, d)
    q, k, v = (t.reshape(batch, num_heads, d) for t in (q, k, v))
    C = f[..., None, None] * C_prev + i[..., None, None] * v[..., :, None] * k[..., None, :]
    n = f[..., None] * n_prev + i[..., None] * k
    C_q = np.einsum("bhij,bhj->bhi", C, q)
    n_q = np.abs(np.einsum("bhj,bhj->bh", n, q))
    h = o * (C_q / np.maximum(n_q, 1.0)[..., None]).reshape(batch, units)
    return {}, (h, C.reshape(batch, -1), n.reshape(batch, -1))
