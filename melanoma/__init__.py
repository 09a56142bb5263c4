"""Skin-lesion batch scoring: the shared core and the services, one folder per purpose.

Layers, each importing only those below it (import-linter checks this in CI):

* services: ``worker``, ``producer``, ``trainer``, ``viewer`` (independent of each other)
* ``lifecycle``: promotion gate and retraining
* ``ml`` (the model) beside ``pipeline`` (queue, scoring, recovery)
* ``versions`` (model registry, model cards) beside ``store`` (database)
* ``core``: settings, errors, labels, files, images

Importing this package never imports TensorFlow; only the network-building parts of ``ml`` do.
"""

__version__ = "0.1.0"
