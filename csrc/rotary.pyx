# cython: language_level=3
"""Cython twin of minifm/kernels/rotary.py (reference: rotate_reference).

RoPE's rotation of every row of x (B, heads, T, D) by its position's angles, "rotate half" layout:
with h = D / 2 and c, s the cos/sin row of the row's (batch, position),

    out[j]     = x[j] * c[j] - x[j + h] * s[j]
    out[j + h] = x[j + h] * c[j] + x[j] * s[j]          j = 0 .. h - 1

in one pass per row, instead of the reference's six NumPy calls (each a pass plus a temporary).
x and out need only their last axis contiguous: the (B, H, T, D) transposed views of (B, T, H, D)
projections are read and written in place. cos and sin are (B or 1, 1, T, h), contiguous; a batch
axis of 1 serves every row of the batch. Rows are split across OpenMP threads when the call is large.
"""
from cython.parallel cimport prange

cimport _common as vec
from _common cimport real

# Serial cost of one element in nanoseconds, for the threading decision.
cdef double NS_PER_ELEMENT = 0.5


cdef inline void _rotate_row(const real* x, const real* c, const real* s, real* out, Py_ssize_t half) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(half):
        out[j] = x[j] * c[j] - x[j + half] * s[j]
        out[j + half] = x[j + half] * c[j] + x[j] * s[j]


def rotate(const real[:, :, :, :] x, const real[:, :, :, ::1] cos, const real[:, :, :, ::1] sin,
           real[:, :, :, :] out):
    """out = x rotated by the angles whose cos/sin are given; shapes as in the module docstring.
    x and out may have any strides but a contiguous last axis; cos and sin are C-contiguous."""
    cdef Py_ssize_t batch = x.shape[0], heads = x.shape[1], steps = x.shape[2], dim = x.shape[3]
    cdef Py_ssize_t half = dim // 2, row, b, h, t, table_batch
    if dim % 2:
        raise ValueError(f"the last axis of x must be even, got {dim}")
    if dim > 1 and (x.strides[3] != sizeof(real) or out.strides[3] != sizeof(real)):
        raise ValueError("x and out need a contiguous last axis")
    if tuple(out.shape)[:4] != tuple(x.shape)[:4]:
        raise ValueError(f"out has shape {tuple(out.shape)[:4]}, x has {tuple(x.shape)[:4]}")
    for name, table in (("cos", cos), ("sin", sin)):
        if (table.shape[0] not in (1, batch) or table.shape[1] != 1 or table.shape[2] != steps
                or table.shape[3] != half):
            raise ValueError(f"{name} must have shape (1 or {batch}, 1, {steps}, {half}), got {tuple(table.shape)[:4]}")
    if batch * heads * steps * dim == 0:
        return
    table_batch = cos.shape[0]
    with nogil:
        for row in prange(batch * heads * steps, schedule="static",
                          num_threads=vec.threads_for(batch * heads * steps, NS_PER_ELEMENT * batch * heads * steps * dim)):
            b = row // (heads * steps)
            h = (row // steps) % heads
            t = row % steps
            if table_batch == 1:
                _rotate_row(&x[b, h, t, 0], &cos[0, 0, t, 0], &sin[0, 0, t, 0], &out[b, h, t, 0], half)
            else:
                _rotate_row(&x[b, h, t, 0], &cos[b, 0, t, 0], &sin[b, 0, t, 0], &out[b, h, t, 0], half)
