"""minifm: a foundation model's whole life, from scratch in NumPy with Cython hot loops."""
__version__ = "0.1.0"
