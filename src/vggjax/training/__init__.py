"""Training: optimizer and schedule, pure train/eval steps, the epoch loop and its stop signals, data
parallelism, and ``train_and_evaluate``, the one function that wires a run together."""
