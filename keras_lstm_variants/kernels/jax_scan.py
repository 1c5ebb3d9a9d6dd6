"""``jax-scan``: JAX's ``lax.scan`` over ``transition(project(x_t))``, with the weight
gradients taken after the loop in training.

**Training on any device** (the cell declares ``additive-recurrence``): JAX's autodiff of
``lax.scan`` would accumulate each weight gradient inside the reverse loop, one small product
per step (``dU += h_{t-1}^T dz_t``, ``dW += x_t^T dz_t``). Here the same forward loop runs
under a ``jax.custom_vjp`` whose backward pass splits the work as cuDNN does:

* JAX differentiates the loop only with respect to the initial states, the small elementwise
  weights (peepholes, FGR's gate feedback) and a zero ``e_t`` added to each step's
  pre-activations ``z_t = W x_t + b + U h_{t-1}``: the gradient of ``e_t`` is ``dz_t``, and no
  ``W``, ``b`` or ``U`` gradient is accumulated in the loop. The forward loop saves each
  step's matrix products and the reverse loop recomputes the elementwise rest from them
  (``jax.checkpoint``, :data:`POLICY`);
* after the loop, those three come from all ``time * batch`` rows at once:
  ``dU = H_prev^T dZ`` (one GEMM), and ``dW``, ``db``, ``dx`` from the VJP of the cell's own
  ``project``.

``dU = H_prev^T dZ`` holds because the cell adds ``U h_{t-1}`` to ``W x_t + b`` unchanged
(its declaration), with no layer norm and no recurrent dropout (instance options checked
here). No gate equation is written here: ``transition`` stays their one definition.
Inference on a CPU gains nothing (its forward pass is the same scan) and keeps Keras's loop.

**On a GPU or TPU** (:func:`accelerator`), every cell that declares ``separable-input`` runs
this loop in inference and in training, with ``lax.scan(..., unroll=8)``
(:data:`ACCELERATOR_UNROLL`; Keras's own JAX loop does not unroll); the custom gradient where
the conditions above hold, else JAX's own.

Masks follow JAX's rule (a masked step keeps the states and outputs the carried ``h``);
``go_backwards``, ``stateful``, ``return_state``, projections, clipping, ``use_bias=False``,
peephole subsets, CIFG and every Greff variant (FGR's extra state included) run here.
tests/test_fast_path.py proves it equal to ``keras.layers.RNN(cell)``: outputs, states and
the gradients of the inputs, initial states and every weight.

Limitation: a ``jax.custom_vjp`` function cannot be differentiated in forward mode. Under
``training=True`` on this kernel, ``jax.jvp``, ``jax.jacfwd`` and ``jax.hessian`` raise JAX's
``TypeError`` ("can't apply forward-mode autodiff (jvp) to a custom_vjp function"); use
``loop="keras"`` (or ``kernels.forced("keras")``) for forward mode in training.

Measured speeds: docs/speed.md and docs/speed-gpu.md.
"""

from keras import StatelessScope

from ._conditions import declares, first, known_steps, mixed_precision, on_backend, zoneout
from ._conditions import steps_transition as _steps_transition

NAME = "jax-scan"
#: ``jax.checkpoint_policies`` name for the reverse loop ("dots_saveable": keep the products,
#: recompute the elementwise ops; measured against the others in docs/speed-fast-path.md).
POLICY = "dots_saveable"
#: ``lax.scan``'s ``unroll`` (steps per loop iteration) on a GPU or TPU; on a CPU the loop is
#: not unrolled (docs/speed-gpu.md).
ACCELERATOR_UNROLL = 8


def accelerator():
    """Whether JAX's default device is a GPU or TPU."""
    import jax

    return jax.default_backend() != "cpu"


def unroll():
    """``lax.scan``'s ``unroll`` for JAX's default device."""
    return ACCELERATOR_UNROLL if accelerator() else 1


def why_not(layer, call):
    reason = first(on_backend("jax"), known_steps(call))
    if reason is not None:
        return reason
    return _steps_transition(layer, call)


def auto_skips(layer, call):
    """Why ``loop="auto"`` leaves a call this kernel can run to the next one: on a CPU it
    gains only with the custom gradient (``None``: auto takes it)."""
    if accelerator():
        return None
    return _weight_gradients_after(layer, call)


def _weight_gradients_after(layer, call):
    """Why the custom gradient cannot run (``None``: it can)."""
    cell = layer.cell
    return first(
        on_backend("jax"),
        None if call.training is True else "inference on a CPU (the gain is in training)",
        declares(cell, "additive-recurrence"),
        declares(cell, "separable-input"),
        "layer_norm is on" if getattr(cell, "layer_norm", False) else None,
        zoneout(cell),
        "dropout is on" if cell.dropout or cell.recurrent_dropout else None,
        mixed_precision(cell),
        "unroll=True" if call.unroll else None,
        known_steps(call),
    )


def run(layer, call):
    after = _weight_gradients_after(layer, call) is None
    return rnn(
        layer.cell,
        call.sequences,
        call.initial_state,
        call.mask,
        call.go_backwards,
        call.zero_output_for_mask,
        call.training,
        after,
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

    ``weight_gradients_after``: the custom gradient above; else the same loop, differentiated
    by JAX as it stands."""
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
