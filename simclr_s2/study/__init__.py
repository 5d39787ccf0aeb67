"""The study's statistics and decisions: splits, metrics, paired statistics, comparison, promotion,
tuning. No MLflow, no argv."""
