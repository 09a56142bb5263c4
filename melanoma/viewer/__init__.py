"""Viewer service: a read-only web app over the results database (``melanoma serve``). Never
imports TensorFlow; heat maps come from the workers."""
