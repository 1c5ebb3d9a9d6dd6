"""Gate inspection: trace every gate of every variant layer, and show it in TensorBoard.

Three parts, data flowing one way (cells -> layers -> tracing -> statistics -> pictures):

* :mod:`.tracing`: :func:`trace_gates` steps each variant layer's own cell over what the
  layer receives and returns every gate and state as NumPy arrays (any Keras backend).
* :mod:`.statistics`: each gate's range, Karpathy et al.'s saturation statistics, what a
  saturated gate means, and the :class:`GateStatistics` TensorBoard callback (TensorFlow).
* :mod:`.pictures`: the heatmap and the saturation scatter (matplotlib; NumPy fallback).
"""

from .pictures import (
    COLORMAP,
    DOT_COLOR,
    MASKED_COLOR,
    heatmap,
    heatmap_figure,
    saturation_figure,
    saturation_plot,
)
from .statistics import (
    GATE_MEANINGS,
    GateStatistics,
    describe,
    gate_range,
    require_tensorflow,
    saturation,
    thresholds,
)
from .tracing import (
    LayerTrace,
    check_has_variant_layer,
    check_input_shape,
    check_mask,
    find_variant_layers,
    trace_gates,
    trace_layers,
)

__all__ = [
    "COLORMAP",
    "DOT_COLOR",
    "GATE_MEANINGS",
    "MASKED_COLOR",
    "GateStatistics",
    "LayerTrace",
    "check_has_variant_layer",
    "check_input_shape",
    "check_mask",
    "describe",
    "find_variant_layers",
    "gate_range",
    "heatmap",
    "heatmap_figure",
    "require_tensorflow",
    "saturation",
    "saturation_figure",
    "saturation_plot",
    "thresholds",
    "trace_gates",
    "trace_layers",
]
