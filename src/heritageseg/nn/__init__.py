"""Pure network code on tensors: models, losses, the training engine, metrics, checkpoints.

Knows no MLflow, no Slurm and no stage (import-linter checks it).
"""
