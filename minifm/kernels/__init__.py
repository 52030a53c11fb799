"""Hot kernels: each family has a readable NumPy reference and a Cython twin in csrc/.

    softmax.py   <-> csrc/softmax.pyx    softmax / log-softmax over the last axis

`backend_info()` says which path runs. MINIFM_KERNELS=reference forces NumPy everywhere;
`use_reference(True)` does the same at run time.
"""
from minifm.kernels._backend import backend_info, check_required, use_reference

check_required()

__all__ = ["backend_info", "use_reference"]
