"""Moving images through the system: the broker and its message format, the worker's batch scoring,
progress announcements, recovery of lost messages and Prometheus telemetry.

Never imports TensorFlow: the worker hands the scorer a predictor.
"""
