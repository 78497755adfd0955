"""The network: embedding -> recurrent stack -> linear decoder, one logit per vocabulary entry."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from charnn.config.model import ModelSpec
from charnn.errors import CharnnError
from charnn.nn.cells import SPECS, mogrifier_names
from charnn.nn.devices import check_fits
from charnn.nn.stack import RecurrentStack

# LSTM-family state is (h, c); GRU and RNN state is h alone. Each is (layers, B, hidden).
State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]

FUSED = {"rnn": nn.RNN, "rnn-relu": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class CharRNN(nn.Module):
    """A character-level language model: embedding -> recurrent stack -> linear decoder.

    The standard cells run on PyTorch's fused modules; peephole, cifg and mogrifier (and any
    cell, with hand_written=True) on the hand-written cells of nn.cells, stacked by nn.stack. Both
    name their parameters alike, so their checkpoints load into each other.
    """

    def __init__(self, config: ModelSpec, hand_written: bool = False) -> None:
        super().__init__()
        if not isinstance(config, ModelSpec):
            raise TypeError("CharRNN is built from a ModelSpec (every setting decided)")
        if config.vocab_size < 1:
            raise ValueError("ModelSpec.vocab_size must be set from the corpus")
        self.config = config
        self.hidden_size = hidden = config.hidden_size
        self.embed = nn.Embedding(config.vocab_size, config.embed_size)
        dropout = config.dropout
        inputs = config.embed_size + (config.label_size if config.labels else 0)
        self.rnn: nn.RNNBase | RecurrentStack
        if config.cell in FUSED and not hand_written:
            extra = {"nonlinearity": "relu"} if config.cell == "rnn-relu" else {}
            self.rnn = FUSED[config.cell](
                inputs,
                hidden,
                num_layers=config.layers,
                dropout=dropout if config.layers > 1 else 0.0,
                batch_first=True,
                **extra,
            )
        else:
            self.rnn = RecurrentStack(
                config.cell, inputs, hidden, config.layers, dropout, config.mogrifier_rounds
            )
        self.drop = (LockedDropout if config.locked_dropout else Dropout)(config.decoder_dropout)
        self.decoder = nn.Linear(hidden, config.vocab_size)
        if "forget" in SPECS[config.cell].gates and config.forget_bias is not None:
            self._set_forget_bias(config.forget_bias)
        # a conditioned model: each label's embedding (row 0: "any") joins every character's
        self.label_embed = (
            nn.Embedding(config.labels + 1, config.label_size) if config.labels else None
        )

    @torch.no_grad()
    def _set_forget_bias(self, value: float) -> None:
        """Start the forget gates at σ(value): b_f = value (in bias_ih; bias_hh's part is 0)."""
        rows = SPECS[self.config.cell].rows("forget", self.hidden_size)
        for k in range(self.config.layers):
            getattr(self.rnn, f"bias_ih_l{k}")[rows] = value
            getattr(self.rnn, f"bias_hh_l{k}")[rows] = 0.0

    def forward(
        self, ids: torch.Tensor, state: State | None = None, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, State]:
        """ids (B, T) -> logits (B, T, vocab) and the state after the last character.

        `labels`, for a conditioned model: each character's label id (B, T), each row's (B,),
        or each row's label vector (B, label_size) (a mix: `mixed`); None: the "any" label."""
        x = self._embed(ids)  # (B, T, embed)
        if self.label_embed is not None:
            x = torch.cat([x, self._condition(labels, ids.shape)], dim=-1)
        out, state = self._recur(x, state)  # (B, T, hidden)
        return self.decoder(self.drop(out)), state

    def _condition(self, labels: torch.Tensor | None, shape: torch.Size) -> torch.Tensor:
        """The label vectors (B, T, label_size) to join the characters' embeddings."""
        assert self.label_embed is not None
        B, T = shape
        if labels is None:
            labels = torch.zeros(B, dtype=torch.long, device=self.label_embed.weight.device)
        if labels.is_floating_point():  # a vector per row
            return labels[:, None, :].expand(B, T, -1)
        vectors = self.label_embed(labels)
        return vectors if labels.dim() == 2 else vectors[:, None, :].expand(B, T, -1)

    def mixed(self, weights: torch.Tensor) -> torch.Tensor:
        """Label vectors from weights over the labels (B, labels + 1): each row between the
        styles it weighs (a one-hot row is that label's own vector)."""
        assert self.label_embed is not None, "an unconditioned model has no labels"
        return weights.to(self.label_embed.weight.dtype) @ self.label_embed.weight

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Embedding dropout (Gal & Ghahramani 2016): in training, drop whole characters'
        vectors for the batch, so the model cannot lean on any one character."""
        p = self.config.embed_dropout
        if not (self.training and p > 0):
            return self.embed(ids)
        weight = self.embed.weight
        return F.embedding(ids, weight * drop_mask(weight, (weight.shape[0], 1), p))

    def _recur(self, x: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        """The recurrent stack; in training with weight_drop, on hidden-to-hidden weights with
        a DropConnect mask drawn once per batch (Wan et al. 2013; Merity et al. 2017): every step
        of the window sees the same dropped weights, and the fused kernels still run."""
        p = self.config.weight_drop
        if not (self.training and p > 0):
            return self.rnn(x, state)
        weights = {
            name: w * drop_mask(w, w.shape, p) if name.startswith("weight_hh") else w
            for name, w in self.rnn.named_parameters()
        }
        return functional_call(self.rnn, weights, (x, state))

    def regularise(self, spec: ModelSpec) -> None:
        """Take the dropout rates and DropConnect of `spec`, this model's shape with other
        regularisation (a re-planned run)."""
        self.config = replace(
            self.config,
            dropout=spec.dropout,
            decoder_dropout=spec.decoder_dropout,
            weight_drop=spec.weight_drop,
        )
        self.drop.p = spec.decoder_dropout
        self.rnn.dropout = spec.dropout if self.config.layers > 1 else 0.0  # read at each call

    def initial_state(self, batch_size: int, device: torch.device | str = "cpu") -> State:
        shape = (self.config.layers, batch_size, self.hidden_size)
        zeros = torch.zeros(shape, device=device)
        return (zeros, zeros.clone()) if SPECS[self.config.cell].has_cell_state else zeros


def detach_state(state: State) -> State:
    """Cut the graph between windows of truncated BPTT, keeping the values."""
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)  # type: ignore[return-value]
    return state.detach()


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_parameters(config: ModelSpec) -> int:
    """The parameters CharRNN(config) holds, counted without building it: an oversized shape
    is refused before it is allocated (nn.devices.check_fits)."""
    spec, hidden, vocab = SPECS[config.cell], config.hidden_size, config.vocab_size
    rows = spec.blocks * hidden  # W (rows x inputs), U (rows x H), two biases, per layer
    labels = (config.labels + 1) * config.label_size if config.labels else 0
    inputs = config.embed_size + (config.label_size if config.labels else 0)
    first = rows * (inputs + hidden + 2)
    others = (config.layers - 1) * rows * (2 * hidden + 2)
    peepholes = config.layers * len(spec.peepholes) * hidden
    rounds = len(mogrifier_names(spec, config.mogrifier_rounds, 0))  # each (input × H) or its ᵀ
    mogrifier = rounds * hidden * (inputs + (config.layers - 1) * hidden)
    return (vocab * config.embed_size + labels + first + others + peepholes + mogrifier
            + (hidden + 1) * vocab)  # fmt: skip


def check_model_fits(config: ModelSpec, device: torch.device) -> None:
    """Refuse, before it is built, a model too big to train in `device`'s memory."""
    shape = f"{config.layers}x{config.hidden_size} {config.cell}"
    check_fits(count_parameters(config), shape, device)


def fits_in_memory(config: ModelSpec, device: torch.device) -> bool:
    try:
        check_model_fits(config, device)
    except CharnnError:
        return False
    return True


def drop_mask(like: torch.Tensor, shape: tuple[int, ...] | torch.Size, p: float) -> torch.Tensor:
    """A dropout mask of `shape`, in `like`'s dtype and device, scaled by 1 / (1 - p) as the kept
    units are. Drawn as uniform numbers below 1 - p: on a 2-core CPU that took under half the
    time of F.dropout's Bernoulli draws, which took 2.0 ms a mask, 15% of a training step with
    dropout 0.2."""
    keep = 1.0 - p
    return (torch.rand(shape, device=like.device) < keep).to(like.dtype) / keep


class Dropout(nn.Module):
    """nn.Dropout's arithmetic, with drop_mask's cheaper mask."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.p > 0):
            return x
        return x * drop_mask(x, x.shape, self.p)


class LockedDropout(nn.Module):
    """Variational dropout (Gal & Ghahramani 2016): one mask per sequence, the same units
    dropped at every step, so the network cannot route around them from step to step."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, H)
        if not (self.training and self.p > 0):
            return x
        return x * drop_mask(x, (x.shape[0], 1, x.shape[2]), self.p)
