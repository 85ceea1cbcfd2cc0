"""Experiments over many runs: Ray Tune sweeps and the cell studies."""
