"""Pure-numpy reference twins of the native kernels: same names, same signatures."""
