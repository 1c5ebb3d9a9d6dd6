"""The ONNX graph builder behind :func:`keras_lstm_variants.export_onnx`: native ``LSTM``/``GRU``
nodes, ``Scan`` loops over a cell's step, and tf2onnx's conversion of the other layers."""

import keras
import numpy as np

from .streaming import _makes_mask, _output_state


class _Graph:
    """One ONNX graph grown layer by layer; every name is unique (a prefix per piece)."""

    def __init__(self, onnx, tf, tf2onnx, opset):
        self.onnx, self.tf, self.tf2onnx, self.opset = onnx, tf, tf2onnx, opset
        self.helper = onnx.helper
        self.nodes, self.initializers, self.inputs = [], [], []
        self.count = 0

    # ------------------------------------------------------------------------- plumbing
    def fresh(self, stem):
        self.count += 1
        return f"{stem}__{self.count}"

    def const(self, stem, value):
        name = self.fresh(stem)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op, inputs, outputs=1, **attrs):
        names = (
            [self.fresh(op.lower()) for _ in range(outputs)]
            if isinstance(outputs, int)
            else outputs
        )
        self.nodes.append(self.helper.make_node(op, inputs, names, name=self.fresh(op), **attrs))
        return names[0] if len(names) == 1 else names

    def input(self, name, spec):
        dtype = self.helper.np_dtype_to_tensor_dtype(np.dtype(spec.dtype.as_numpy_dtype))
        dims = ["batch" if i == 0 else "time" if i == 1 else None for i in range(len(spec.shape))]
        dims = [d if s is None else s for d, s in zip(dims, spec.shape, strict=True)]
        self.inputs.append(self.helper.make_tensor_value_info(name, dtype, dims))
        return name

    def model(self, output, shape):
        dims = [f"d{i}" if size is None else int(size) for i, size in enumerate(shape)]
        out = self.helper.make_tensor_value_info("output", self.onnx.TensorProto.FLOAT, dims)
        self.nodes.append(self.helper.make_node("Identity", [output], ["output"], name="output"))
        graph = self.helper.make_graph(
            self.nodes, "keras_lstm_variants", self.inputs, [out], self.initializers
        )
        proto = self.helper.make_model(
            graph,
            opset_imports=[self.helper.make_opsetid("", self.opset)],
            producer_name="keras_lstm_variants",
        )
        proto.ir_version = min(proto.ir_version, 8)
        return proto

    def converted(self, fn, specs):
        """``fn`` (TensorFlow, on ``specs``) converted by tf2onnx: its graph, every name
        prefixed so that it cannot collide with this graph's."""
        tf = self.tf
        function = tf.function(fn, input_signature=specs, autograph=False)
        proto, _ = self.tf2onnx.convert.from_function(
            function, input_signature=specs, opset=self.opset
        )
        proto = self.onnx.compose.add_prefix(proto, self.fresh("tf") + "/")
        return proto.graph

    def splice(self, graph, inputs):
        """Add ``graph``'s nodes and initializers, fed by ``inputs`` (names here, one per graph
        input); return the names of its outputs."""
        for outer, inner in zip(inputs, graph.input, strict=True):
            self.nodes.append(self.helper.make_node("Identity", [outer], [inner.name]))
        self.nodes.extend(graph.node)
        self.initializers.extend(graph.initializer)
        return [o.name for o in graph.output]

    # ---------------------------------------------------------------------- stock layers
    def layers(self, layers, name, shape, mask):
        """A run of non-recurrent layers through tf2onnx: the output, its shape and the mask
        (``(batch, time)`` float 0/1, or ``None``) that the layers pass on or make."""
        tf = self.tf
        spec = tf.TensorSpec(shape, self._dtype(layers[0]), name="x")
        specs = [spec] if mask is None else [spec, tf.TensorSpec(shape[:2], "float32", name="m")]

        def run(x, m=None):
            m = None if m is None else m > 0.5
            for layer in layers:
                m = layer.compute_mask(x, m) if layer.supports_masking or _makes_mask(layer) else m
                x = layer(x, training=False)
            return x if m is None else (x, tf.cast(m, "float32"))

        traced = tf.function(run, input_signature=specs, autograph=False)
        outputs = traced.get_concrete_function().structured_outputs
        out_shape = tuple(keras.tree.flatten(outputs)[0].shape)
        names = self.splice(self.converted(run, specs), [name] if mask is None else [name, mask])
        return names[0], out_shape, (names[1] if len(names) > 1 else None)

    def _dtype(self, layer):
        try:
            return keras.tree.flatten(layer.input)[0].dtype
        except (AttributeError, ValueError):
            return "float32"

    # ---------------------------------------------------------------------- recurrent layers
    def recurrent(self, layer, plan, name, shape, mask=None):
        if isinstance(layer, keras.layers.Bidirectional):
            fwd = self._direction(layer.forward_layer, plan, name, shape, mask)
            bwd = self._direction(layer.backward_layer, plan, name, shape, mask, realign=True)
            mode = layer.merge_mode
            if mode == "concat":
                out = self.node("Concat", [fwd, bwd], axis=-1)
            elif mode == "sum":
                out = self.node("Add", [fwd, bwd])
            elif mode == "mul":
                out = self.node("Mul", [fwd, bwd])
            else:  # "ave"
                half = self.const("half", np.array(0.5, "float32"))
                out = self.node("Mul", [self.node("Add", [fwd, bwd]), half])
        else:
            out = self._direction(layer, plan, name, shape, mask)
        return out, tuple(keras.tree.flatten(layer.output)[0].shape)

    def _direction(self, layer, plan, name, shape, mask, realign=False):
        """One recurrent layer: (batch, time, units) if it returns sequences, else
        (batch, units). A ``go_backwards`` layer reads the sequence backwards and returns its
        outputs in the order it computed them, as Keras's; ``realign`` flips them back into
        the input's order, as ``Bidirectional`` does with its backward layer."""
        x = self._flip(name) if layer.go_backwards else name
        if mask is not None and layer.go_backwards:
            mask = self._flip(mask)
        if plan == "native":
            seq, last = self._native(layer, x)
        else:
            seq, last = self._scan(layer, x, shape, mask)
        if not layer.return_sequences:
            return last()
        return self._flip(seq) if realign and layer.go_backwards else seq

    def _flip(self, name):
        """``name`` reversed along time (axis 1)."""
        return self.node(
            "Slice",
            [
                name,
                self.const("start", np.array([-1], "int64")),
                self.const("end", np.array([np.iinfo(np.int64).min], "int64")),
                self.const("axis", np.array([1], "int64")),
                self.const("step", np.array([-1], "int64")),
            ],
        )

    def _native(self, layer, x):
        """The LSTM/GRU node over ``x``: its sequence output and a function making its last."""
        cell = layer.cell
        weights = [np.asarray(w) for w in (cell.kernel, cell.recurrent_kernel)]
        kernel, recurrent = weights
        units = cell.units
        bias = np.asarray(cell.bias) if cell.use_bias else None
        x = self.node("Transpose", [x], perm=[1, 0, 2])  # time-major
        gru = isinstance(cell, keras.layers.GRUCell) or hasattr(cell, "reset_after")
        if gru:
            w, r = kernel.T, recurrent.T  # z, r, h: ONNX's order
            if bias is None:
                b = np.zeros(6 * units, "float32")
            elif cell.reset_after:
                b = np.concatenate([bias[0], bias[1]])
            else:
                b = np.concatenate([bias, np.zeros_like(bias)])
            y, y_h = self.node(
                "GRU",
                [x, self.const("W", w[None]), self.const("R", r[None]), self.const("B", b[None])],
                outputs=2,
                hidden_size=units,
                linear_before_reset=int(bool(cell.reset_after)),
            )
        else:
            w, r, b, p, coupled = _lstm_weights(cell, kernel, recurrent, bias)
            inputs = [x, self.const("W", w[None]), self.const("R", r[None])]
            inputs += [self.const("B", b[None]), "", "", ""]
            attrs = {"hidden_size": units}
            if p is not None:
                inputs.append(self.const("P", p[None]))
            if coupled:
                attrs["input_forget"] = 1
            while inputs[-1] == "":
                inputs.pop()
            y, y_h, _ = self.node("LSTM", inputs, outputs=3, **attrs)
        seq = None
        if layer.return_sequences:
            seq = self.node("Squeeze", [y, self.const("axes", np.array([1], "int64"))])
            seq = self.node("Transpose", [seq], perm=[1, 0, 2])
        return seq, lambda: self.node("Squeeze", [y_h, self.const("axes", np.array([0], "int64"))])

    def _scan(self, layer, name, shape, mask=None):
        """The cell's own step (tf2onnx) as the body of an ONNX ``Scan`` over time."""
        tf = self.tf
        cell = layer.cell
        structure = _zero_states(cell)
        flat = keras.tree.flatten(structure)
        x_spec = tf.TensorSpec((None, *shape[2:]), cell.compute_dtype, name="x_t")
        state_specs = [
            tf.TensorSpec((None, *s.shape[1:]), s.dtype, name=f"state{k}")
            for k, s in enumerate(flat)
        ]

        def step(x_t, *states):
            output, new = cell(x_t, keras.tree.pack_sequence_as(structure, list(states)))
            return [output, *keras.tree.flatten(new)]

        def masked_step(x_t, m_t, *states):
            # A masked step keeps every state and repeats the last output (zeros with
            # zero_output_for_mask), as Keras's sequence layers do.
            output, *new = step(x_t, *states)
            keep = m_t > 0.5
            new = [
                tf.where(tf.reshape(keep, (-1,) + (1,) * (len(s.shape) - 1)), n, s)
                for n, s in zip(new, states, strict=True)
            ]
            empty = (
                tf.zeros_like(output)
                if layer.zero_output_for_mask
                else _output_state(layer, states)
            )
            return [tf.where(keep[:, None], output, empty), *new]

        scanned = 1
        if mask is None:
            body = self.converted(step, [x_spec, *state_specs])
        else:
            m_spec = tf.TensorSpec((None,), "float32", name="m_t")
            body = self.converted(masked_step, [x_spec, m_spec, *state_specs])
            scanned = 2
        # Scan's body takes the states, then the scanned x_t (and m_t); returns the new
        # states, then the output.
        body_inputs = [*body.input[scanned:], *body.input[:scanned]]
        body_outputs = [*body.output[1:], body.output[0]]
        self.initializers.extend(body.initializer)  # outer-scope constants
        del body.initializer[:]
        del body.input[:]
        del body.output[:]
        body.input.extend(body_inputs)
        body.output.extend(body_outputs)
        batch = self.node(
            "Slice",
            [
                self.node("Shape", [name]),
                self.const("start", np.array([0], "int64")),
                self.const("end", np.array([1], "int64")),
            ],
        )
        zeros = []
        for s in flat:
            size = self.node(
                "Concat", [batch, self.const("shape", np.array(s.shape[1:], "int64"))], axis=0
            )
            dtype = np.dtype(keras.backend.standardize_dtype(s.dtype))
            value = self.helper.make_tensor(
                "zero", self.helper.np_dtype_to_tensor_dtype(dtype), [1], [0]
            )
            zeros.append(self.node("ConstantOfShape", [size], value=value))
        outs = self.node(
            "Scan",
            [*zeros, name] + ([] if mask is None else [mask]),
            outputs=len(flat) + 1,
            body=body,
            num_scan_inputs=scanned,
            scan_input_axes=[1] * scanned,
            scan_output_axes=[1],
        )
        seq = outs[-1]
        if mask is not None:  # the last output is the one of the last unmasked step: h
            return seq, lambda: _output_state(layer, outs[: len(flat)])
        return seq, lambda: self.node(
            "Gather", [seq, self.const("last", np.array(-1, "int64"))], axis=1
        )


def _zero_states(cell):
    if hasattr(cell, "get_initial_state"):
        return cell.get_initial_state(batch_size=1)
    sizes = cell.state_size if isinstance(cell.state_size, (list, tuple)) else [cell.state_size]
    return [keras.ops.zeros((1, s), dtype=cell.compute_dtype) for s in sizes]


def _lstm_weights(cell, kernel, recurrent, bias):
    """ONNX's W (4H, F), R (4H, H), B (8H,), P (3H,) or None, and whether gates are coupled."""
    units = cell.units
    blocks = tuple(getattr(cell, "blocks", ("input", "forget", "candidate", "output")))
    coupled = blocks == ("forget", "candidate", "output")
    peepholes = dict(getattr(cell, "peephole_weights", {}))

    def split(matrix):
        parts = dict(zip(blocks, np.split(matrix, len(blocks), axis=-1), strict=True))
        if coupled:  # ONNX Runtime: i from the i block, f = 1 - i; ours: f, and i = 1 - f
            parts["input"] = -parts.pop("forget")
            parts["forget"] = np.zeros_like(parts["input"])
        return np.concatenate(
            [parts[g] for g in ("input", "output", "forget", "candidate")], axis=-1
        )

    w, r = split(kernel).T, split(recurrent).T
    b = np.zeros(4 * units, "float32") if bias is None else split(bias)
    b = np.concatenate([b, np.zeros(4 * units, "float32")])
    p = None
    if peepholes:
        vectors = {g: np.asarray(v) for g, v in peepholes.items()}
        if coupled:
            vectors["input"] = -vectors.pop("forget", np.zeros(units, "float32"))
        zero = np.zeros(units, "float32")
        p = np.concatenate([vectors.get(g, zero) for g in ("input", "output", "forget")])
    return w, r, b, p, coupled
