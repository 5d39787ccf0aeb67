"""Everything that speaks MLflow: runs (keys, reuse, resume), the model registry, datasets and artifacts."""
