"""Entry point of the logged pyfunc model ("models from code"): MLflow runs this file when it
loads the model, so nothing is unpickled. Not imported by the package itself."""

import mlflow

from heritageseg.infer.serving import SegmentationModel

mlflow.models.set_model(SegmentationModel())
