"""MLflow: the store (where, whether it answers) and the runs (what a run logs)."""
