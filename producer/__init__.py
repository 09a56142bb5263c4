"""The producer service's entry point (``python -m producer``); its code is ``melanoma.producer``."""
