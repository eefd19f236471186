"""Data: rating tables, tasks, task batches, the embedded synthetic world and the data module."""
