"""The network: the cells written as their equations, the hand-written LSTM-family window and
stack, the model, the NumPy stepper for sampling, and where and in what arithmetic it runs."""
