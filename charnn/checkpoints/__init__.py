"""Saved models: the run folder (its files, claiming and locking it, finding runs), the checkpoint
file format, loading a model, and summaries of what a checkpoint holds."""
