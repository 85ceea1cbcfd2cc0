"""The served model: the MLflow pyfunc and what `mlflow models serve` answers."""
