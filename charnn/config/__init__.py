"""The settings of a run, a model and a sample: typed, frozen, checked when built. A request
leaves a setting as None to have it planned; a decided config (RunConfig, ModelSpec) has all.

Nothing here imports torch or NumPy: the command line reads these to build its flags.
"""
