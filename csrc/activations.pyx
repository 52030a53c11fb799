# cython: language_level=3
"""Cython twin of minifm/kernels/activations.py (references: gelu_reference, gelu_backward_reference,
silu_mul_reference).

Exact (erf) GELU and its derivative, one pass over contiguous memory, elements split across OpenMP
threads in blocks:

    forward:   y  = x * Phi(x)                          Phi = standard normal CDF
    backward:  dx = dy * (Phi(x) + x * phi(x))          phi = standard normal density

so the forward saves nothing (backward recomputes Phi from x) and no temporary array is allocated.
For training, gelu_forward_with_derivative also writes dy/dx = Phi(x) + x phi(x) in the same pass
(Phi is shared, one more exp), so that the backward is a single multiply.

Phi(x) = erfc(-x / sqrt 2) / 2. float64 calls libm's erfc per element (full precision). float32 is
computed in float32 by csrc/_gelu.h: the Chebyshev-fitted erfc of Numerical Recipes (Press et al.,
"erfcc", relative error below 1.2e-7), with x^2, the exponent and 1 / (1 + z/2) carried in pairs of
floats where their rounding would otherwise grow (the header says how), and an exp of its own. Checked
over every float32 in [-30, 30]: output within 3.82e-7 relative of libm's double erfc (about three ulp),
derivative within 1.3e-7 absolute. `omp simd` C loops, as Cython cannot emit the pragma: written in
Cython, GCC left them scalar (~19 ns per element on the AMD host); the same formula evaluated in double
took 2.7 ns per element with the derivative, in float32 1.7 (4 floats per AVX2 register became 8, and
float division is cheaper). NaN stays NaN; x = +inf gives +inf; x = -inf gives NaN (-inf * 0), as the
reference does.

SwiGLU's gate, silu_mul_forward: out = silu(gate) * up = gate / (1 + exp(-gate)) * up, one pass
(the NumPy route takes ~8 passes and temporaries: 15% of a 512-token SmolLM2 prefill). The loop is
_common.pxd's silu_mul (an `omp simd` loop: Cython cannot emit the pragma, and without it GCC left
this loop scalar), in the element type with _common.pxd's exp (float32: ~1 ulp). exp overflows to
+inf for gate below -88 (float32) / -709 (float64) and the output is then -0 * up; a NaN gate gives NaN.
Its backward, silu_mul_backward, recomputes s = sigmoid(gate) in the same kind of loop and writes both
gradients in one pass: d_up = grad * gate * s, d_gate = grad * up * (s + gate * s * (1 - s)).
"""
from cython.parallel cimport prange
from libc.math cimport erfc, exp, sqrt

cimport _common as vec
from _common cimport real

cdef extern from "_gelu.h":
    void gelu_forward_f "minifm_gelu_forward_f"(const float* x, float* y, Py_ssize_t n) noexcept nogil
    void gelu_backward_f "minifm_gelu_backward_f"(const float* x, const float* dy, float* dx, Py_ssize_t n) noexcept nogil
    void gelu_forward_derivative_f "minifm_gelu_forward_derivative_f"(
        const float* x, float* y, float* dydx, Py_ssize_t n) noexcept nogil

cdef enum:
    BLOCK = 8192    # elements per parallel work item

# Serial cost of one element in nanoseconds, for the threading decision (float32 on one core of the 2-core
# AMD host, AVX2, measured: forward ~1.4, forward with derivative or backward ~1.7).
cdef double NS_PER_ELEMENT = 2.0
cdef double NS_PER_SILU_ELEMENT = 1.0
cdef double NS_PER_SILU_BACKWARD_ELEMENT = 1.5



cdef double INV_SQRT2 = 0.70710678118654752440
cdef double INV_SQRT_2PI = 0.39894228040143267794


cdef inline double _normal_cdf_exact(double x) noexcept nogil:
    return 0.5 * erfc(-x * INV_SQRT2)


cdef void _forward_block(const real* x, real* y, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    cdef double v
    if real is float:
        gelu_forward_f(x, y, n)
    else:
        for j in range(n):
            v = x[j]
            y[j] = v * _normal_cdf_exact(v)


cdef void _backward_block(const real* x, const real* dy, real* dx, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    cdef double v
    if real is float:
        gelu_backward_f(x, dy, dx, n)
    else:
        for j in range(n):
            v = x[j]
            dx[j] = dy[j] * (_normal_cdf_exact(v) + v * INV_SQRT_2PI * exp(-0.5 * v * v))


cdef void _forward_derivative_block(const real* x, real* y, real* dydx, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    cdef double v, cdf
    if real is float:
        gelu_forward_derivative_f(x, y, dydx, n)
    else:
        for j in range(n):
            v = x[j]
            cdf = _normal_cdf_exact(v)
            y[j] = v * cdf
            dydx[j] = cdf + v * INV_SQRT_2PI * exp(-0.5 * v * v)


def gelu_forward(const real[::1] x, real[::1] out):
    """out[j] = x[j] * Phi(x[j]) for flat contiguous arrays of equal length."""
    cdef Py_ssize_t n = x.shape[0], blocks, block, start
    if out.shape[0] != n:
        raise ValueError(f"out has {out.shape[0]} elements, x has {n}")
    if n == 0:
        return
    blocks = (n + BLOCK - 1) // BLOCK
    with nogil:
        for block in prange(blocks, schedule="static", num_threads=vec.threads_for(blocks, NS_PER_ELEMENT * n)):
            start = block * BLOCK
            _forward_block(&x[start], &out[start], min(<Py_ssize_t>BLOCK, n - start))


def gelu_backward(const real[::1] x, const real[::1] dy, real[::1] dx):
    """dx[j] = dy[j] * (Phi(x[j]) + x[j] phi(x[j])) for flat contiguous arrays of equal length."""
    cdef Py_ssize_t n = x.shape[0], blocks, block, start
    if dy.shape[0] != n or dx.shape[0] != n:
        raise ValueError(f"dy ({dy.shape[0]}) and dx ({dx.shape[0]}) must have as many elements as x ({n})")
    if n == 0:
        return
    blocks = (n + BLOCK - 1) // BLOCK
    with nogil:
        for block in prange(blocks, schedule="static", num_threads=vec.threads_for(blocks, NS_PER_ELEMENT * n)):
            start = block * BLOCK
            _backward_block(&x[start], &dy[start], &dx[start], min(<Py_ssize_t>BLOCK, n - start))


def gelu_forward_with_derivative(const real[::1] x, real[::1] out, real[::1] dydx):
    """out[j] = x[j] Phi(x[j]) and dydx[j] = Phi(x[j]) + x[j] phi(x[j]) in one pass (training: the
    backward is then one multiply, dx = dy * dydx)."""
    cdef Py_ssize_t n = x.shape[0], blocks, block, start
    if out.shape[0] != n or dydx.shape[0] != n:
        raise ValueError(f"out ({out.shape[0]}) and dydx ({dydx.shape[0]}) must have as many elements as x ({n})")
    if n == 0:
        return
    blocks = (n + BLOCK - 1) // BLOCK
    with nogil:
        for block in prange(blocks, schedule="static", num_threads=vec.threads_for(blocks, NS_PER_ELEMENT * n)):
            start = block * BLOCK
            _forward_derivative_block(&x[start], &out[start], &dydx[start], min(<Py_ssize_t>BLOCK, n - start))


def silu_mul_forward(const real[::1] gate, const real[::1] up, real[::1] out):
    """out[j] = gate[j] / (1 + exp(-gate[j])) * up[j] for flat contiguous arrays of equal length."""
    cdef Py_ssize_t n = gate.shape[0], blocks, block, start
    if up.shape[0] != n or out.shape[0] != n:
        raise ValueError(f"up ({up.shape[0]}) and out ({out.shape[0]}) must have as many elements as gate ({n})")
    if n == 0:
        return
    blocks = (n + BLOCK - 1) // BLOCK
    with nogil:
        for block in prange(blocks, schedule="static",
                            num_threads=vec.threads_for(blocks, NS_PER_SILU_ELEMENT * n)):
            start = block * BLOCK
            vec.silu_mul(&gate[start], &up[start], &out[start], min(<Py_ssize_t>BLOCK, n - start))


def silu_mul_backward(const real[::1] gate, const real[::1] up, const real[::1] grad, real[::1] d_gate,
                      real[::1] d_up):
    """d_up[j] = grad[j] silu(gate[j]) and d_gate[j] = grad[j] up[j] silu'(gate[j]) in one pass, for flat
    contiguous arrays of equal length (sigmoid(gate) recomputed: the forward saved nothing)."""
    cdef Py_ssize_t n = gate.shape[0], blocks, block, start
    if up.shape[0] != n or grad.shape[0] != n or d_gate.shape[0] != n or d_up.shape[0] != n:
        raise ValueError(f"up ({up.shape[0]}), grad ({grad.shape[0]}), d_gate ({d_gate.shape[0]}) and d_up "
                         f"({d_up.shape[0]}) must have as many elements as gate ({n})")
    if n == 0:
        return
    blocks = (n + BLOCK - 1) // BLOCK
    with nogil:
        for block in prange(blocks, schedule="static",
                            num_threads=vec.threads_for(blocks, NS_PER_SILU_BACKWARD_ELEMENT * n)):
            start = block * BLOCK
            vec.silu_mul_backward(&gate[start], &up[start], &grad[start], &d_gate[start], &d_up[start],
                                  min(<Py_ssize_t>BLOCK, n - start))


def silu_mul_packed_forward(const real[:, ::1] packed, real[:, ::1] out):
    """out[i, j] = silu(packed[i, j]) * packed[i, F + j] with F = out.shape[1]: gate and up side by side in each
    row of packed (N, 2F), as one product with the two weights stacked gives them (SwiGLU's fused gate/up)."""
    cdef Py_ssize_t rows = packed.shape[0], hidden = out.shape[1], row
    if packed.shape[1] != 2 * hidden or out.shape[0] != rows:
        raise ValueError(f"packed must be (N, 2F) for out (N, F); got packed ({packed.shape[0]}, {packed.shape[1]}) "
                         f"and out ({out.shape[0]}, {out.shape[1]})")
    if rows == 0 or hidden == 0:
        return
    with nogil:
        for row in prange(rows, schedule="static",
                          num_threads=vec.threads_for(rows, NS_PER_SILU_ELEMENT * rows * hidden)):
            vec.silu_mul(&packed[row, 0], &packed[row, hidden], &out[row, 0], hidden)


def silu_mul_packed_backward(const real[:, ::1] packed, const real[:, ::1] grad, real[:, ::1] d_packed):
    """d_packed (N, 2F): the gradients of gate and up side by side, for the upstream gradient grad (N, F) of
    silu_mul_packed_forward (so that one product with the stacked weights gives the input's gradient)."""
    cdef Py_ssize_t rows = packed.shape[0], hidden = grad.shape[1], row
    if packed.shape[1] != 2 * hidden or grad.shape[0] != rows or d_packed.shape[0] != rows \
            or d_packed.shape[1] != 2 * hidden:
        raise ValueError(f"packed and d_packed must be (N, 2F) for grad (N, F); got packed ({packed.shape[0]}, "
                         f"{packed.shape[1]}), grad ({grad.shape[0]}, {grad.shape[1]}), d_packed "
                         f"({d_packed.shape[0]}, {d_packed.shape[1]})")
    if rows == 0 or hidden == 0:
        return
    with nogil:
        for row in prange(rows, schedule="static",
                          num_threads=vec.threads_for(rows, NS_PER_SILU_BACKWARD_ELEMENT * rows * hidden)):
            vec.silu_mul_backward(&packed[row, 0], &packed[row, hidden], &grad[row, 0], &d_packed[row, 0],
                                  &d_packed[row, hidden], hidden)
