"""Hypothesis strategies shared by the test suite. Each area keeps its strategies in its own section."""
import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

# ---------------------------------------------------------------- arrays and shapes (autograd, kernels)


def float_arrays(shape, dtype=np.float64, low=-3.0, high=3.0):
    """Finite float arrays of `shape` with elements in [low, high]."""
    return hnp.arrays(dtype, shape, elements=st.floats(low, high, allow_nan=False, width=64 if dtype == np.float64 else 32))


small_shapes = hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=5)
