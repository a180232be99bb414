"""Inference: the sliding window, backends (one name -> builder table), export, serving."""
