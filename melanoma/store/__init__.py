"""The results database: ORM schema and migrations, sessions, jobs and their rows, browsing, heat maps.

Never imports TensorFlow, the queue or the model code.
"""
