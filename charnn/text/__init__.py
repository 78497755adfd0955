"""Text in, ids out: the vocabulary, reading files, the corpus reader with its id cache, and the
built-in corpora. NumPy only, no torch."""
