"""Looking inside: every unit's state and gates along a text, what they track, and a run's
training curves."""
