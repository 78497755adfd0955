"""What a run, a model and a sample are asked to be: typed, frozen settings, checked when built.

Nothing here imports torch or NumPy: the command line reads these to build its flags.
"""
