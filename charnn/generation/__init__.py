"""Generating text: reading the prime, choosing each next character, the repetition penalty, the
batch of rows in flight that sampling and the server share, and beam search."""
