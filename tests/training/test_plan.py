"""The plan, case by case: what a run with a given budget, text and measured speeds is planned
to be. The speeds are those of a made-up machine; each case says what its numbers mean."""

from dataclasses import replace

import pytest

from charnn.config.model import ModelConfig
from charnn.config.train import TrainConfig
from charnn.errors import SettingError
from charnn.training.plan import REGULARISED, Facts, Width, patience_for, plan_run, replan

# each width trains slower and has more parameters than the last; 85% of a budget trains
WIDTHS = {
    128: Width(chars_per_sec=80_000, parameters=250_000),
    256: Width(chars_per_sec=30_000, parameters=870_000),  # 25,500 chars/s counted
    384: Width(chars_per_sec=15_000, parameters=1_870_000),  # 12,750
    512: Width(chars_per_sec=11_000, parameters=3_300_000),  # 9,350
}
MB = 10**6  # a 1 MB training split: 976 windows of 32 x 32 characters a pass


def planned(config: TrainConfig, **facts) -> TrainConfig:
    return plan_run(config, Facts(**{"widths": WIDTHS, "train_chars": MB, **facts})).config


def width(budget: float, **facts) -> int:
    return planned(TrainConfig(time_budget=budget), **facts).model.hidden_size


def test_a_time_budget_plans_the_widest_model_that_gets_enough_characters():
    assert width(70) == 256
    assert width(300) == 384 and width(600) == 384
    assert width(1200) == 384  # 2x512 would train 11.2M characters: 3.4 per parameter
    assert width(1500, train_chars=2 * MB) == 512  # 14M characters: 4.2 per parameter


def test_two_characters_per_parameter_take_a_model_to_384_units():
    # 2x384 needs 3.74M characters: 293.3 s at 12,750 chars/s
    assert width(295) == 384 and width(290) == 256


def test_four_characters_per_parameter_take_a_model_to_512_units():
    # 2x512 needs 13.2M characters: 1,411.8 s at 9,350 chars/s, on a text big enough to count
    assert width(1415, train_chars=10**8) == 512 and width(1405, train_chars=10**8) == 384


def test_a_budget_too_short_for_one_character_per_parameter_narrows_the_model_to_128():
    # 2x256 needs 870,000 characters: 34.1 s at 25,500 chars/s
    assert width(35) == 256 and width(33) == 128
    assert width(1) == 128  # nothing fits: the narrowest measured


def test_under_one_character_per_parameter_256_stays_where_it_reads_its_text_five_times():
    # 17 s: 2x256 trains 433,500 characters, five passes over 86,700
    assert width(17, train_chars=85_000) == 256
    assert width(17, train_chars=88_000) == 128
    assert width(17, train_chars=0) == 128  # the text's size unknown


def test_at_most_ten_passes_over_a_small_text_count_toward_a_wide_model():
    # 2400 s of 2x512 train 22.4M characters, enough for 4 per parameter on a big text; on a
    # small one only 10 passes count, and 2x512 needs 13.2M of them
    assert width(2400, train_chars=1_330_000) == 512
    assert width(2400, train_chars=1_310_000) == 384
    assert width(2400, train_chars=10_000) == 256  # 384 needs 3.74M: 10 passes are 100,000


def test_a_width_given_or_unmeasured_is_never_moved():
    given = TrainConfig(time_budget=600, model=ModelConfig(hidden_size=100))
    assert planned(given).model.hidden_size == 100
    assert planned(TrainConfig(max_steps=10)).model.hidden_size == 256  # no budget
    assert plan_run(TrainConfig(time_budget=600)).config.model.hidden_size == 256  # unmeasured


@pytest.mark.parametrize(
    ("steps", "dropout"),
    [(3_300, 0.0), (3_700, 0.1), (6_700, 0.1), (7_000, 0.2), (10_700, 0.2), (10_900, 0.3)],
)
def test_dropout_rises_with_the_passes_over_the_text(steps, dropout):
    # a step trains 1,024 characters: 3,300 steps are 3.4 passes over 1 MB, 10,900 are 11.2
    config = planned(TrainConfig(max_steps=steps))
    assert config.model.dropout == dropout
    assert config.model.decoder_dropout == dropout / 2  # half before the decoder, in 2 layers


def test_many_passes_bring_dropconnect_and_then_awd_lstms_strength():
    def model(epochs: float, **given) -> ModelConfig:
        return planned(TrainConfig(epochs=epochs, model=ModelConfig(**given))).model

    assert (model(1.5).dropout, model(1.5).weight_drop) == (0.0, 0.0)
    assert (model(20).dropout, model(20).weight_drop) == (0.3, 0.0)
    assert (model(20.1).dropout, model(20.1).weight_drop) == (0.3, 0.2)
    assert (model(35).dropout, model(35).weight_drop) == (0.3, 0.2)
    assert (model(35.1).dropout, model(35.1).weight_drop) == (0.5, 0.5)
    assert planned(TrainConfig()).model.dropout == 0.2  # 10 passes when nothing says how many
    assert model(50, dropout=0.05).dropout == 0.05  # a rate given explicitly wins
    assert model(50, weight_drop=0.0).weight_drop == 0.0
    assert model(50, decoder_dropout=0.4).decoder_dropout == 0.4


def test_a_budget_counts_passes_at_the_planned_widths_speed():
    assert planned(TrainConfig(time_budget=600)).model.dropout == 0.2  # 2x384: 7.7 passes
    assert planned(TrainConfig(time_budget=600), train_chars=10**7).model.dropout == 0.0


def test_beta1_is_short_up_to_twenty_passes_and_a_given_one_wins():
    assert planned(TrainConfig(epochs=1)).beta1 == 0.5
    assert planned(TrainConfig(epochs=20)).beta1 == 0.5
    assert planned(TrainConfig(epochs=20.1)).beta1 == 0.9
    assert planned(TrainConfig(time_budget=600), train_chars=10_000).beta1 == 0.9
    assert planned(TrainConfig(epochs=50, beta1=0.7)).beta1 == 0.7
    assert planned(TrainConfig(epochs=1, beta1=0.0)).beta1 == 0.0


def test_a_run_past_twenty_passes_stops_once_it_stops_improving():
    assert planned(TrainConfig(epochs=20)).patience == 0  # never stops early
    assert planned(TrainConfig(epochs=20.1)).patience == 3
    assert planned(TrainConfig(time_budget=600), train_chars=10_000).patience == 3
    assert planned(TrainConfig(epochs=50, patience=0)).patience == 0  # given: wins
    assert planned(TrainConfig(epochs=5, patience=7)).patience == 7


def test_patience_covers_3000_steps_where_evaluations_come_more_often():
    assert patience_for(1000) == 3 and patience_for(2000) == 3  # never fewer than 3
    assert patience_for(300) == 10 and patience_for(100) == 30
    small = planned(TrainConfig(epochs=50), train_chars=10_000, eval_chars_read=1000)
    assert small.eval_every == 100 and small.patience == 30
    told = planned(TrainConfig(epochs=50, eval_every=500), train_chars=10_000)
    assert told.patience == 6  # the spacing given explicitly counts too
    assert planned(TrainConfig(epochs=50, eval_every=100, patience=2)).patience == 2


def test_a_replan_moves_only_what_the_plan_chose_and_only_across_a_tier():
    request = TrainConfig(
        time_budget=500,
        patience=0,
        beta1=0.5,
        model=ModelConfig(hidden_size=384, dropout=0.3, weight_drop=0.0),
    )
    config = planned(request)  # fmt: skip
    twenty = 20 * MB / 500  # chars/s for exactly 20 passes over 1 MB in 500 s
    same, changed, passes = replan(config, REGULARISED, twenty, MB)
    assert passes == pytest.approx(20) and changed == {} and same == config
    faster, changed, _ = replan(config, REGULARISED, twenty * 1.01, MB)
    assert changed == {"weight_drop": 0.2, "patience": 3, "beta1": 0.9}
    assert faster.model.hidden_size == 384 and faster.model.dropout == 0.3  # the width stays
    slower, changed, _ = replan(config, [*REGULARISED, "decoder_dropout"], twenty / 10, MB)
    assert changed == {"dropout": 0.0, "decoder_dropout": 0.0}
    assert slower.model.dropout == slower.model.decoder_dropout == 0.0
    mine, changed, _ = replan(config, ["patience"], twenty * 5, MB)  # the rest was given
    assert changed == {"patience": 3} and mine.model == config.model
    _, _, passes = replan(replace(config, max_steps=100), REGULARISED, twenty, MB)
    assert passes == pytest.approx(100 * 1024 / MB)  # a step limit first: its characters count
    with pytest.raises(ValueError, match="time-budgeted"):
        replan(replace(config, time_budget=None), REGULARISED, twenty, MB)


def test_a_replan_counts_its_own_evaluation_spacing():
    config = planned(TrainConfig(time_budget=500, patience=0, eval_every=100))
    _, changed, _ = replan(config, ["patience"], 50 * MB / 500, MB)  # 50 passes
    assert changed == {"patience": 30}


def test_precision_is_planned_for_a_budget_and_weight_decay_is_not():
    for config in (TrainConfig(time_budget=70), TrainConfig(), TrainConfig(max_steps=10)):
        assert planned(config).weight_decay == 0.1
    assert planned(TrainConfig(time_budget=70, weight_decay=0.0)).weight_decay == 0.0
    assert planned(TrainConfig(time_budget=300), native_bf16=True).precision == "bf16"
    assert planned(TrainConfig(time_budget=300), native_bf16=False).precision == "fp32"
    fp32 = TrainConfig(time_budget=300, precision="fp32")
    assert planned(fp32, native_bf16=True).precision == "fp32"
    assert planned(TrainConfig(), native_bf16=True).precision == "fp32"  # no budget


def test_the_plan_says_once_what_it_chose_and_plans_once():
    plan = plan_run(TrainConfig(time_budget=300), Facts(MB, True, WIDTHS))
    for part in ("5m", "bf16 autocast", "hidden size 384", "passes"):
        assert part in (plan.notice or "")
    assert "weight decay" not in (plan.notice or "")  # a plain default, not planned
    measured = plan_run(TrainConfig(time_budget=120), Facts(MB, False, WIDTHS))
    assert "hidden size 256" in (measured.notice or "")  # measured, so named
    assert plan_run(TrainConfig(max_steps=5)).notice is None  # nothing beyond the defaults
    decided = TrainConfig(time_budget=300, precision="fp32",
                          model=ModelConfig(hidden_size=64, dropout=0.0))  # fmt: skip
    assert plan_run(decided, Facts(MB, True, WIDTHS)).notice is None  # every setting given
    again = plan_run(plan.config, Facts(MB, True, WIDTHS))
    assert again.config == plan.config and again.notice is None  # nothing left to decide


def test_the_notice_names_the_cell_and_weights_kept_on_the_evidence():
    facts = Facts(MB, True, WIDTHS)
    kept = "the LSTM and its live weights"
    assert kept in (plan_run(TrainConfig(time_budget=120), facts).notice or "")
    gru = TrainConfig(time_budget=120, model=ModelConfig(cell="gru"))
    for asked in (gru, TrainConfig(time_budget=120, average=0.1)):
        assert kept not in (plan_run(asked, facts).notice or "")  # a choice of the user's
    assert kept not in (plan_run(TrainConfig(max_steps=5), facts).notice or "")  # no budget


def test_evaluations_take_at_most_five_percent_of_the_training_time():
    # an evaluation costs half a training character's time per character read; 1000 steps of
    # 1,024 characters leave 5% to one that reads 102,400 characters
    short = TrainConfig(max_steps=10)
    assert planned(short, eval_chars_read=102_400).eval_every == 1000
    assert planned(short, eval_chars_read=102_500).eval_every == 1100  # on, in hundreds
    assert planned(short, eval_chars_read=409_500).eval_every == 4000
    assert planned(short, eval_chars_read=10_000).eval_every == 1000  # never more often
    assert planned(short).eval_every == 1000  # an unknown split
    assert planned(replace(short, eval_every=7), eval_chars_read=409_600).eval_every == 7
    plan = plan_run(short, Facts(MB, eval_chars_read=204_700))
    assert "eval every 2000" in (plan.notice or "")
    # a run that keeps the weights' average scores it too: each evaluation costs twice as much
    assert planned(replace(short, average=0.1), eval_chars_read=102_400).eval_every == 2000


def test_evaluations_come_at_least_every_two_passes_over_a_small_text():
    short, cheap = TrainConfig(max_steps=10), 1000  # an evaluation that costs next to nothing
    assert planned(short, train_chars=256_000, eval_chars_read=cheap).eval_every == 500
    assert planned(short, train_chars=256_100, eval_chars_read=cheap).eval_every == 600
    assert planned(short, train_chars=10, eval_chars_read=cheap).eval_every == 100  # at least
    assert planned(short, train_chars=10**7, eval_chars_read=cheap).eval_every == 1000
    # ...but never so often that they take more than 5%: 81,920 characters every 800 steps
    assert planned(short, train_chars=256_000, eval_chars_read=81_920).eval_every == 800
    assert planned(replace(short, eval_every=7), train_chars=10).eval_every == 7


def test_a_planned_run_has_every_setting_decided():
    config = planned(TrainConfig(time_budget=300))
    assert None not in (config.precision, config.beta1, config.patience, config.eval_every,
                        config.weight_decay, config.lr_decay, config.model.hidden_size,
                        config.model.dropout, config.model.decoder_dropout,
                        config.model.weight_drop)  # fmt: skip
    with pytest.raises(SettingError, match="precision must be text"):
        replace(config, precision=None)


def test_a_short_text_is_planned_for_the_passes_its_fitted_streams_make():
    # 1,000 training characters: fewer rows than 32, each one window, 10 passes by default
    assert planned(TrainConfig(), train_chars=1_000).model.dropout == 0.2
    assert planned(TrainConfig(epochs=20), train_chars=500).model.dropout == 0.3


def test_a_wide_vocabulary_plans_a_wider_embedding_and_says_so():
    def embedding(vocab_size: int, **model) -> int:
        config = TrainConfig(max_steps=10, model=ModelConfig(**model))
        return planned(config, vocab_size=vocab_size).model.embed_size

    assert embedding(65) == embedding(256) == embedding(0) == 64  # alphabets; an unknown one
    assert embedding(257) == embedding(1_128) == 256
    assert embedding(1_128, embed_size=32) == 32  # given explicitly
    wide = plan_run(TrainConfig(max_steps=10), Facts(MB, vocab_size=1_128))
    assert "embed size 256" in (wide.notice or "")
    narrow = plan_run(TrainConfig(max_steps=10), Facts(MB, vocab_size=65))
    assert "embed size" not in (narrow.notice or "")
