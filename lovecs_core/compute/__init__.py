"""Where and how tensors are computed: device choice, precision, out-of-memory halving, estimates."""
