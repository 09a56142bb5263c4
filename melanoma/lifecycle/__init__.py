"""Deciding which model version serves: the promotion gate and the retraining loop.

Sits above :mod:`melanoma.ml` (it trains and evaluates) and :mod:`melanoma.versions` (it publishes).
"""
