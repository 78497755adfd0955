"""Training a model: the plan and its calibration, the run's length and learning rate, the streams
of windows, the resume state, torchrun ranks, the events the loop reports, and the loop itself."""
