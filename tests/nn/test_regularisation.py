"""AWD-LSTM-style regularisation: on in training, off (and deterministic) in evaluation."""

from dataclasses import asdict

import pytest
import torch

from charnn.config.model import DECODER_DROPOUT_SHARE, ModelConfig, ModelSpec
from charnn.nn.model import CharRNN, Dropout, drop_mask

from conftest import TINY, run_charnn

SHAPE = dict(vocab_size=12, hidden_size=16, embed_size=6, layers=2, dropout=0.0)
SETTINGS = {
    "dropout": dict(dropout=0.5),
    "decoder_dropout": dict(decoder_dropout=0.5),  # before the decoder alone
    "weight_drop": dict(weight_drop=0.5),
    "embed_dropout": dict(embed_dropout=0.5),
    "locked_dropout": dict(decoder_dropout=0.5, locked_dropout=True),
}


def pair(cell: str, **regularised) -> tuple[CharRNN, CharRNN]:
    """The same weights, with and without the regularisation."""
    torch.manual_seed(0)
    plain = CharRNN(ModelSpec(cell=cell, **SHAPE))
    other = CharRNN(ModelSpec(cell=cell, **{**SHAPE, **regularised}))
    other.load_state_dict(plain.state_dict())
    return plain, other


IDS = torch.randint(12, (3, 10), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", SETTINGS)
@pytest.mark.parametrize("cell", ["lstm", "gru", "peephole"])
def test_off_in_evaluation_on_in_training(name, cell):
    plain, regularised = pair(cell, **SETTINGS[name])
    plain.eval(), regularised.eval()
    with torch.no_grad():
        assert torch.equal(plain(IDS)[0], regularised(IDS)[0])  # evaluation: the same model
    regularised.train()
    with torch.no_grad():
        first, second = regularised(IDS)[0], regularised(IDS)[0]
    assert not torch.equal(first, second)  # a fresh mask per batch
    assert not torch.equal(first, plain.eval()(IDS)[0])


def test_weight_drop_masks_the_hidden_weights_gradient_and_leaves_the_weights():
    plain, dropped = pair("lstm", weight_drop=0.5)
    before = {n: p.detach().clone() for n, p in dropped.named_parameters()}
    dropped.train()
    logits, _ = dropped(IDS)
    logits.sum().backward()
    grad = dropped.rnn.weight_hh_l0.grad
    zero = (grad == 0).float().mean().item()
    assert 0.3 < zero < 0.7  # about half the hidden-to-hidden weights took no part
    assert (dropped.rnn.weight_ih_l0.grad == 0).float().mean().item() < 0.05  # input weights all
    assert all(torch.equal(before[n], p) for n, p in dropped.named_parameters())


def test_locked_dropout_shares_its_mask_across_time():
    _, locked = pair("lstm", decoder_dropout=0.5, locked_dropout=True)
    x = torch.ones(2, 7, 5)
    out = locked.drop.train()(x)
    assert torch.equal(out[:, :1].expand_as(out), out)  # every step: the first step's mask
    assert (out == 0).any() and (out != 0).any()


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_a_drop_mask_drops_p_of_the_units_and_scales_the_rest_as_dropout_does(p):
    torch.manual_seed(0)
    like = torch.zeros(1, dtype=torch.bfloat16)
    mask = drop_mask(like, (400, 500), p)
    assert mask.shape == (400, 500) and mask.dtype == torch.bfloat16
    kept = mask != 0
    assert abs(1 - kept.float().mean().item() - p) < 0.005  # 200,000 draws
    assert torch.equal(mask[kept], torch.full_like(mask[kept], 1 / (1 - p)))
    x = torch.randn(64, 32)
    assert torch.equal(Dropout(p).eval()(x), x)


def test_the_flags_reach_the_checkpoint(tmp_path, corpus):
    flags = ["--weight-drop", "0.3", "--embed-dropout", "0.1", "--locked-dropout",
             "--decoder-dropout", "0.05"]  # fmt: skip
    proc = run_charnn("train", str(corpus), "--max-steps", "3", "--checkpoint-dir",
                      str(tmp_path), "--name", "awd", *flags, *TINY)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    from charnn.checkpoints.loading import load_checkpoint

    config = load_checkpoint(tmp_path / "awd").model.config
    assert (config.weight_drop, config.embed_dropout, config.locked_dropout) == (0.3, 0.1, True)
    assert config.decoder_dropout == 0.05


def test_the_dropout_before_the_decoder_is_a_share_of_the_dropout_between_layers():
    def before_decoder(**settings) -> float:
        return CharRNN(ModelSpec.of(ModelConfig(**{**SHAPE, **settings}))).drop.p

    assert before_decoder(dropout=0.4) == pytest.approx(0.4 * DECODER_DROPOUT_SHARE)
    assert before_decoder(dropout=0.4, layers=1) == 0.4  # the only dropout a 1-layer model has
    assert before_decoder(dropout=0.4, decoder_dropout=0.1) == 0.1  # given: it wins
    assert before_decoder(dropout=0.0, decoder_dropout=0.3) == 0.3
    model = CharRNN(ModelSpec(**SHAPE))
    model.regularise(ModelSpec.of(ModelConfig(**{**SHAPE, "dropout": 0.2})))  # a re-plan
    assert model.drop.p == pytest.approx(0.2 * DECODER_DROPOUT_SHARE) and model.rnn.dropout == 0.2


def test_a_checkpoint_from_before_the_decoder_dropout_keeps_one_rate_for_both():
    saved = {**SHAPE, "dropout": 0.3}  # what such a checkpoint's model config holds
    assert ModelSpec.from_dict(saved).decoder_dropout == 0.3
    assert CharRNN(ModelSpec.from_dict(saved)).drop.p == 0.3
    later = {**saved, "decoder_dropout": None}  # saved while it followed the dropout
    assert ModelSpec.from_dict(later).decoder_dropout == pytest.approx(0.3 * DECODER_DROPOUT_SHARE)
    assert ModelSpec.from_dict(asdict(ModelSpec(**saved))) == ModelSpec(**saved)  # as saved now


@pytest.mark.parametrize("cell", ["lstm", "peephole"])
def test_a_model_regularised_after_it_is_built_trains_as_one_built_so(cell):
    """What a re-planned run does: the same masks, in the same order, as a model built with the
    new dropout and weight drop."""
    built_plain, built = pair(cell, dropout=0.3, weight_drop=0.2)
    changed = CharRNN(ModelSpec(cell=cell, **SHAPE))
    changed.load_state_dict(built_plain.state_dict())
    changed.regularise(built.config)
    assert changed.config == built.config
    built.train(), changed.train()
    torch.manual_seed(5)
    expected = built(IDS)[0]
    torch.manual_seed(5)
    assert torch.equal(changed(IDS)[0], expected)
    torch.manual_seed(5)
    assert not torch.equal(built_plain.train()(IDS)[0], expected)  # dropout made a difference
