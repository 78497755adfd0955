"""The network: embedding -> recurrent stack -> linear decoder, one logit per vocabulary entry."""

from __future__ import annotations

import torch
from torch import nn

from charnn.config import ModelConfig

# LSTM state is (h, c); GRU and RNN state is h alone. Each is (layers, B, hidden).
State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]

_FUSED = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class CharRNN(nn.Module):
    """A character-level language model over PyTorch's fused recurrent modules."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.vocab_size < 1:
            raise ValueError("ModelConfig.vocab_size must be set from the corpus")
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.embed_size)
        self.rnn = _FUSED[config.cell](
            config.embed_size,
            config.hidden_size,
            num_layers=config.layers,
            dropout=config.dropout if config.layers > 1 else 0.0,
            batch_first=True,
        )
        self.drop = nn.Dropout(config.dropout)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)

    def forward(self, ids: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """ids (B, T) -> logits (B, T, vocab) and the state after the last character."""
        x = self.embed(ids)  # (B, T, embed)
        out, state = self.rnn(x, state)  # (B, T, hidden)
        return self.decoder(self.drop(out)), state

    def initial_state(self, batch_size: int, device: torch.device | str = "cpu") -> State:
        shape = (self.config.layers, batch_size, self.config.hidden_size)
        zeros = torch.zeros(shape, device=device)
        return (zeros, zeros.clone()) if self.config.cell == "lstm" else zeros


def detach_state(state: State) -> State:
    """Cut the graph between windows of truncated BPTT, keeping the values."""
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)  # type: ignore[return-value]
    return state.detach()


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
