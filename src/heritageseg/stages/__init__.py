"""The pipeline's stages: each reads its params section and writes the files dvc.yaml names."""
