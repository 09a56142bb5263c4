"""Shared core of the skin-lesion batch-scoring system.

Holds what the producer, the worker and the trainer share: settings, class labels,
image preprocessing, the model definition, the model registry and the database schema.
Importing this package never imports TensorFlow; only `melanoma.model`, `melanoma.predict`
and `melanoma.train` do.
"""

__version__ = "0.1.0"
