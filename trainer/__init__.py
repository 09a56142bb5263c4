"""The trainer service's entry point (``python -m trainer``); its code is ``melanoma.trainer``."""
