"""Compiled kernels (built from native/*.pyx by setup.py); each has a hand-written .pyi."""
