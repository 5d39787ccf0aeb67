"""The learning code: networks, augmentations, SimCLR pretraining, supervised training, their data
sets and runtime. No MLflow, no argv."""
