"""Training: the run directory, the one loop both phases share, and the two phases."""
