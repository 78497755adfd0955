"""Measuring a model: bits per character over side-by-side streams, dynamic evaluation, and the
novelty of a sample against the training text."""
