"""What every part shares: settings, user-facing errors, class labels, file access and image decoding.

Imports nothing else of the package; never imports TensorFlow.
"""
