"""A run on disk: its folder, checkpoints and weights (orbax), metrics, plots and report."""
