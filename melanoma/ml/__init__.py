"""The model's life: training data and rebalancing, recipes, layers, the network, training,
evaluation, plots, prediction and Grad-CAM explanation. The modules that build or run a network
import TensorFlow; ``data``, ``recipes``, ``evaluate`` and ``plots`` do not.
"""
