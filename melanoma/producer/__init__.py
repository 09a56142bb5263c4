"""Producer service: submits folders of images as jobs and reports on them. Never imports TensorFlow."""
