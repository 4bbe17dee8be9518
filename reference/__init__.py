"""The float64 NumPy reference transformer: ground truth for the conformance suite.

One function per equation of Vaswani et al. (2017), "Attention Is All You Need". Every op of
the backend contract (backends/CONTRACT.md) is here with the same name and arguments, plus a
keyword-only ``dtype`` (default float64) used only for the tolerance model's baseline.
"""

from reference import layers, model
from reference.config import Config, as_config
from reference.layers import *  # noqa: F403 - the building blocks' ops, as layers.__all__ lists them
from reference.model import *  # noqa: F403 - the model's ops, as model.__all__ lists them
from reference.params import init_params, param_shapes
from reference.precision import DTYPES, unit_roundoff

__all__ = ["DTYPES", "Config", "as_config", "init_params", "param_shapes", "unit_roundoff",
           *layers.__all__, *model.__all__]
