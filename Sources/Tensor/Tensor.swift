// Tensor target.
