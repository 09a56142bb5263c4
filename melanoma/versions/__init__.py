"""Model versions on disk: the registry that publishes and loads them, and their model cards.

Used by training (which publishes) and prediction (which loads); decides nothing about which
version should be current (that is :mod:`melanoma.lifecycle`).
"""
