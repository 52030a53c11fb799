"""Hypothesis strategies shared by the test suite. Each area keeps its strategies in its own section."""
import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

# ---------------------------------------------------------------- arrays and shapes (autograd, kernels)


def float_arrays(shape, dtype=np.float64, low=-3.0, high=3.0):
    """Finite float arrays of `shape` with elements in [low, high]."""
    return hnp.arrays(dtype, shape, elements=st.floats(low, high, allow_nan=False, width=64 if dtype == np.float64 else 32))


small_shapes = hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=5)


# ---------------------------------------------------------------- autograd (tests/autograd)
# Small shapes on purpose: gradcheck costs two forward passes per input element.

autograd_shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=3)
autograd_nonscalar_shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=3)
# two shapes that broadcast together, size-1 and missing leading axes included
broadcast_pairs = hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, min_side=1, max_side=3)


def autograd_arrays(shape, low=-2.0, high=2.0):
    """float64 arrays with elements in [low, high]."""
    return hnp.arrays(np.float64, shape, elements=st.floats(low, high, allow_nan=False, allow_infinity=False))


def positive_arrays(shape, low=0.2, high=3.0):
    """float64 arrays away from 0 (domains of log, sqrt, division, pow with a tensor exponent)."""
    return autograd_arrays(shape, low, high)


def off_grid_arrays(shape, offset=0.1):
    """Values 0.25 k + offset for integers |k| <= 8: two arrays drawn with offsets 0 and 0.1 never tie,
    and an offset of 0.1 keeps every value at least 0.1 away from 0 (the kinks of abs/relu/max)."""
    return hnp.arrays(np.int64, shape, elements=st.integers(-8, 8)).map(lambda k: 0.25 * k + offset)


def distinct_arrays(shape):
    """Values at least 0.1 apart (no ties, so max/min have a unique winner per reduction)."""
    return hnp.arrays(np.int64, shape, elements=st.integers(-40, 40), unique=True).map(lambda k: 0.1 * k)


# ---------------------------------------------------------------- tokenizer (tests/tokenizer)
# Arbitrary Unicode (surrogates excluded, as str.encode("utf-8") requires) mixed with pieces that
# stress a byte-level BPE: emoji and ZWJ sequences, CJK, combining marks, NUL and control
# characters, Unicode numbers that are not digits, contractions, long runs, special-token text.
tokenizer_nasty_pieces = st.sampled_from([
    "🙂", "👩\u200d👩\u200d👧", "🇫🇷", "你好，世界", "こんにちは", "한국어", "e\u0301", "\u0301\u0308", "\x00",
    "\x1c\x1f", "\x7f", "\r\n", "\n\n\n", "\t ", "   ", "\u00a0", "\u2028", "\u3000", "'s", "'LL", "'re",
    "123456", "²³", "Ⅻ", "½", "\u200b", "\ufeff", "\U0010ffff", "\U0001d49c", "x" * 40, "=" * 33,
    "<|endoftext|>", "<|end|>", "<|user|>", "<|", "|>", "def f(x):\n    return x", "Ünïcödé",
    "مرحبا", "Привет", "\ufffd",
])
tokenizer_text = st.lists(st.one_of(st.text(max_size=16), tokenizer_nasty_pieces), max_size=10).map("".join)
