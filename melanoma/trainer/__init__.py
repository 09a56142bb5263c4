"""Trainer service: trains the CNN on labelled images and publishes versions to the model registry."""
