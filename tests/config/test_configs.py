"""The configs check every value when built, in the words of their fields, from Python too."""

import math
from dataclasses import fields

import pytest

from charnn.config.checks import field_types
from charnn.config.model import ModelConfig, ModelSpec
from charnn.config.sample import SampleConfig
from charnn.config.train import RunConfig, TrainConfig
from charnn.errors import SettingError

CONFIGS = (ModelConfig, ModelSpec, TrainConfig, RunConfig, SampleConfig)
NUMBER_FIELDS = [
    (config, f.name)
    for config in CONFIGS
    for f in fields(config)
    if "float" in str(field_types(config)[f.name])
]


def test_every_config_has_number_fields_to_check():
    named = {(config.__name__, name) for config, name in NUMBER_FIELDS}
    assert {("SampleConfig", "temperature"), ("SampleConfig", "repetition_penalty"),
            ("TrainConfig", "lr"), ("ModelConfig", "dropout")} <= named  # fmt: skip


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize(("config", "name"), NUMBER_FIELDS, ids=lambda x: getattr(x, "__name__", x))
def test_a_non_finite_number_is_refused_by_its_field(config, name, value):
    with pytest.raises(SettingError) as refused:
        config(**{name: value})
    assert str(refused.value) == f"{name} must be a finite number, not {value!r}"
    assert refused.value.render(lambda s: "--" + s.replace("_", "-")).startswith(
        "--" + name.replace("_", "-")
    )  # the command line names the flag


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: SampleConfig(temperature=-1), "temperature must be 0 (greedy) or more"),
        (lambda: SampleConfig(top_p=0), "top_p must be in (0, 1]"),
        (lambda: SampleConfig(repetition_penalty=0.5), "repetition_penalty must be at least 1"),
        (lambda: SampleConfig(seed=-1), "seed must be from 0 to"),
        (lambda: SampleConfig(beam=2, top_k=3), "beam searches for the likeliest text and draws "
                                                "nothing: leave out temperature, top_k and top_p"),
        (lambda: TrainConfig(val_frac=1.0), "val_frac must be between 0 and 1"),
        (lambda: ModelConfig(cell="lsmt"), "cell must be one of rnn, rnn-relu, lstm"),
        (lambda: ModelConfig(dropout=1.0), "dropout must be in [0, 1)"),
        (lambda: ModelConfig(mogrifier_rounds=-1), "mogrifier_rounds must be 0 (the LSTM) or more"),
    ],
)  # fmt: skip
def test_a_value_out_of_range_is_refused_in_the_words_of_its_field(make, message):
    with pytest.raises(SettingError) as refused:
        make()
    assert str(refused.value).startswith(message)
    assert "--" not in str(refused.value)


def test_a_decided_config_refuses_a_setting_left_to_plan():
    with pytest.raises(SettingError, match="^hidden_size must be a whole number, not None"):
        ModelSpec(hidden_size=None)  # type: ignore[arg-type]
    with pytest.raises(SettingError, match="^precision must be text, not None"):
        RunConfig(precision=None)  # type: ignore[arg-type]


def test_a_request_becomes_a_decided_config_with_the_plans_values_and_the_defaults():
    request = TrainConfig(corpus="a.txt", model=ModelConfig(dropout=0.4), beta1=0.7)
    decided = RunConfig.of(request, hidden_size=384, precision="bf16")
    assert (decided.model.hidden_size, decided.model.dropout) == (384, 0.4)
    assert decided.model.decoder_dropout == 0.2  # half the dropout between two layers
    assert (decided.beta1, decided.precision, decided.patience) == (0.7, "bf16", 0)
    assert RunConfig.from_dict(decided.to_dict()) == decided


def test_a_template_names_settings_and_keeps_literal_braces():
    err = SettingError("{hidden_size} {{not a setting}} must be at least 1")
    assert str(err) == "hidden_size {not a setting} must be at least 1"
    assert err.render(str.upper) == "HIDDEN_SIZE {not a setting} must be at least 1"
