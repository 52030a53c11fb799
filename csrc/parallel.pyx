# cython: language_level=3
"""OpenMP state for minifm.kernels.backend_info(): whether OpenMP is compiled in and how many
threads a parallel region gets (OMP_NUM_THREADS is honoured by the OpenMP runtime)."""

cdef extern from *:
    """
    #if MINIFM_OPENMP
    #include <omp.h>
    static int minifm_max_threads(void) { return omp_get_max_threads(); }
    static void minifm_set_threads(int n) { omp_set_num_threads(n); }
    static int minifm_openmp(void) { return 1; }
    #else
    static int minifm_max_threads(void) { return 1; }
    static void minifm_set_threads(int n) { (void)n; }
    static int minifm_openmp(void) { return 0; }
    #endif
    """
    int minifm_max_threads() nogil
    void minifm_set_threads(int n) nogil
    int minifm_openmp() nogil


def openmp_enabled():
    """True when the kernels were compiled with OpenMP."""
    return bool(minifm_openmp())


def num_threads():
    """Threads an OpenMP parallel region will use (1 without OpenMP)."""
    return minifm_max_threads()


def set_num_threads(int n):
    """Set the OpenMP thread count for later parallel regions."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    minifm_set_threads(n)
