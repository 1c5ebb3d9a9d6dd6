"""Gate inspection (being split into tracing, statistics and pictures)."""

from .tracing import *  # noqa: F403
from .tracing import (  # noqa: F401
    COLORMAP,
    DOT_COLOR,
    MASKED_COLOR,
    check_has_variant_layer,
    heatmap,
    saturation,
    saturation_plot,
)
