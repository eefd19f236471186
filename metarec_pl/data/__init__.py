"""Data: rating tables, tasks, task batches, the facts a model is built from (``info.DataInfo``), the embedded
synthetic world and the data module."""
