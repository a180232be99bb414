"""The edge to the outside: MLflow tracking and registry, Slurm launch, params profiles."""
