import contextlib
import json
from pathlib import Path

import pytest
import torch

from charnn.checkpoints.format import make_payload, read_payload, save_atomic
from charnn.checkpoints.loading import find_checkpoint, load_checkpoint
from charnn.checkpoints.summary import list_runs, summarize_checkpoint
from charnn.config.model import ModelConfig, ModelSpec
from charnn.config.train import TrainConfig
from charnn.errors import CharnnError
from charnn.nn.model import CharRNN
from charnn.text.vocab import Vocab

from conftest import make_trainer, run_charnn


@pytest.fixture
def run_dir(tmp_path):
    trainer = make_trainer(
        "abcabdabeabf" * 40,
        run_dir=tmp_path / "run",
        max_steps=20,
        eval_every=10,
        model=ModelConfig(cell="gru", hidden_size=16),
    )
    (tmp_path / "run").mkdir()
    trainer.run()
    return trainer, tmp_path / "run"


def test_run_folder_holds_last_and_best(run_dir):
    _, folder = run_dir
    assert (folder / "last.pt").is_file() and (folder / "best.pt").is_file()
    lines = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [10, 20]  # one line per save
    for line in lines:
        assert {"step", "time", "chars_per_sec", "train_loss", "val_bpc", "lr"} <= set(line)
        assert line["evaluated"] and line["chars_per_sec"] > 0 and line["lr"] > 0


def test_checkpoint_reloads_to_identical_logits(run_dir):
    trainer, folder = run_dir
    loaded = load_checkpoint(folder / "last.pt")
    ids = torch.randint(0, len(trainer.vocab), (3, 17))
    trainer.model.eval()
    with torch.no_grad():
        assert torch.equal(trainer.model(ids)[0], loaded.model(ids)[0])
    assert loaded.vocab == trainer.vocab and loaded.step == 20
    assert loaded.model.config.cell == "gru"


def test_checkpoint_is_self_describing_and_weights_only(run_dir):
    _, folder = run_dir
    payload = torch.load(folder / "best.pt", weights_only=True)
    for key in (
        "format_version",
        "charnn_version",
        "model_config",
        "train_config",
        "vocab",
        "model_state",
        "optimizer_state",
        "step",
        "metrics",
    ):
        assert key in payload
    assert all(t.device.type == "cpu" for t in payload["model_state"].values())


def test_find_checkpoint_prefers_newest_run_and_filters_by_cell(run_dir, tmp_path):
    _, folder = run_dir
    assert find_checkpoint(tmp_path) == folder / "best.pt"
    with pytest.raises(CharnnError, match="no lstm run"):
        find_checkpoint(tmp_path, cell="lstm")
    with pytest.raises(CharnnError, match="no run found"):
        find_checkpoint(tmp_path / "empty")


def test_truncated_and_foreign_files_are_refused(run_dir, tmp_path):
    _, folder = run_dir
    data = (folder / "last.pt").read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CharnnError, match="corrupt or truncated"):
        read_payload(truncated)
    text = tmp_path / "notes.pt"  # a text file, named as checkpoints are
    text.write_text("hello text\n", encoding="utf-8")
    with pytest.raises(CharnnError, match="not a checkpoint at all"):
        read_payload(text)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda p: p.pop("vocab"), "its vocab is missing or malformed"),
        (lambda p: p.update(vocab=5), "its vocab is missing or malformed"),
        (lambda p: p.update(vocab=p["vocab"][::-1]), "code-point order"),
        (lambda p: p.update(model_state=None, step="7"), "model_state, step are missing"),
    ],
)
def test_a_checkpoint_lacking_what_a_model_needs_is_refused_by_name(
    run_dir, tmp_path, change, named
):
    _, folder = run_dir
    payload = torch.load(folder / "last.pt", weights_only=True)
    change(payload)
    broken = tmp_path / "broken.pt"
    torch.save(payload, broken)
    for read in (read_payload, load_checkpoint, summarize_checkpoint):
        with pytest.raises(
            CharnnError, match=f"broken.pt is not a usable charnn checkpoint.*{named}"
        ):
            read(broken)


def test_a_format_version_that_is_not_a_number_is_not_a_checkpoint(run_dir, tmp_path):
    _, folder = run_dir
    payload = torch.load(folder / "last.pt", weights_only=True)
    payload["format_version"] = "1"
    torch.save(payload, tmp_path / "odd.pt")
    with pytest.raises(CharnnError, match="odd.pt is not a charnn checkpoint"):
        read_payload(tmp_path / "odd.pt")


def test_a_hand_made_checkpoint_with_defaults_left_out_loads_and_is_described(run_dir, tmp_path):
    _, folder = run_dir
    payload = torch.load(folder / "last.pt", weights_only=True)
    for name in ("embed_size", "dropout", "layers"):  # the fallbacks the run used
        del payload["model_config"][name]
    payload["train_config"] = None
    hand_made = tmp_path / "hand.pt"
    torch.save(payload, hand_made)
    assert load_checkpoint(hand_made).model.config.cell == "gru"
    proc = run_charnn("info", str(hand_made))
    assert proc.returncode == 0, proc.stderr
    assert "gru, 2x16, embed 64, dropout 0.0" in proc.stdout


def test_any_field_of_any_type_is_loaded_described_or_refused_in_one_line(run_dir, tmp_path):
    """Every top-level field of a real checkpoint replaced by values of other types: loading it
    and `charnn info` (text and JSON) either work or end in a CharnnError, never a traceback."""
    from click.testing import CliRunner

    from charnn.cli import main

    _, folder = run_dir
    payload = torch.load(folder / "last.pt", weights_only=True)
    edited, runner, refused = tmp_path / "edited.pt", CliRunner(), set()
    for name in payload:
        for value in (None, "x", 5, {}, []):
            torch.save({**payload, name: value}, edited)
            try:
                load_checkpoint(edited)
            except CharnnError:
                refused.add(name)
            for json_flag in ([], ["--json"]):
                result = runner.invoke(main, ["info", str(edited), *json_flag])
                assert result.exit_code in (0, 1), (name, value, result.exception)
                assert isinstance(result.exception, SystemExit | None), (name, value)
    assert {"format_version", "model_config", "model_state", "vocab", "step"} <= refused


def test_any_nested_field_of_any_type_is_described_or_refused_in_one_line(run_dir, tmp_path):
    """The same one level down, in the fields `charnn info` prints: each value of the shape, the
    settings, the metrics and the plan (its re-planning too) replaced or removed."""
    from click.testing import CliRunner

    from charnn.cli import main

    _, folder = run_dir
    payload = torch.load(folder / "last.pt", weights_only=True)
    payload["plan"] = {  # as a time-budgeted run keeps it
        "chosen": {"dropout": 0.1}, "why": "2.0 passes over 384 training characters",
        "expected_chars": 768.0, "passes": 2.0, "from_passes": ["dropout"],
        "replanned": {"step": 2, "passes": 3.0, "chars_per_sec": 99.0, "changed": {"dropout": 0.2}},
    }  # fmt: skip
    payload["corpus_files"] = [["a.txt", "0" * 64]]
    edited, runner = tmp_path / "edited.pt", CliRunner()
    torch.save(payload, edited)
    described = runner.invoke(main, ["info", str(edited)]).output
    assert "plan         dropout 0.1" in described and "re-planned   dropout 0.2" in described
    assert "val_bpc" in described and "corpus files 1: a.txt" in described
    places = [(name, key) for name in ("model_config", "train_config", "metrics", "plan")
              for key in payload[name]]  # fmt: skip
    places += [("plan", "replanned", key) for key in payload["plan"]["replanned"]]
    places += [("corpus_files", 0, 0), ("corpus_files", 0, 1)]
    removed = object()
    for *outer, last in places:
        for value in (None, "x", 5, {}, [], removed):
            copy = torch.load(folder / "last.pt", weights_only=True) | {
                "plan": json.loads(json.dumps(payload["plan"])),
                "corpus_files": [["a.txt", "0" * 64]],
            }
            inner = copy
            for key in outer:
                inner = inner[key]
            if value is removed:
                del inner[last]
            else:
                inner[last] = value
            torch.save(copy, edited)
            with contextlib.suppress(CharnnError):
                load_checkpoint(edited)
            for json_flag in ([], ["--json"]):
                result = runner.invoke(main, ["info", str(edited), *json_flag])
                assert result.exit_code in (0, 1), (outer, last, value, result.exception)
                assert isinstance(result.exception, SystemExit | None), (outer, last, value)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ModelConfig(hidden_size="32"),
         "hidden_size must be a whole number (or left unset), not '32'"),
        (lambda: ModelConfig(layers=True), "layers must be a whole number, not True"),
        (lambda: ModelConfig(locked_dropout="yes"),
         "locked_dropout must be true or false, not 'yes'"),
        (lambda: ModelConfig(vocab_size=3.0), "vocab_size must be a whole number, not 3.0"),
        (lambda: TrainConfig(lr="fast"), "lr must be a number, not 'fast'"),
        (lambda: TrainConfig(corpus=5), "corpus must be "),
        (lambda: TrainConfig(model={"layers": 2}), "model must be ModelConfig"),
    ],
)  # fmt: skip
def test_a_setting_of_another_type_is_refused_by_its_name(make, message):
    with pytest.raises(CharnnError) as refused:
        make()
    assert str(refused.value).startswith(message)


def test_settings_of_the_types_they_stand_for_are_taken_as_given():
    assert TrainConfig(lr=1, time_budget=60).lr == 1  # a whole number is a number
    assert TrainConfig(corpus=Path("a.txt")).corpus == "a.txt"
    assert TrainConfig(corpus=["a.txt", Path("b")]).corpus == ("a.txt", "b")
    assert ModelConfig(forget_bias=None, dropout=0).dropout == 0


def test_a_checkpoint_setting_of_another_type_is_named_in_one_line(run_dir, tmp_path):
    _, folder = run_dir
    payload = torch.load(folder / "last.pt", weights_only=True)
    payload["model_config"]["hidden_size"] = "16"
    edited = tmp_path / "edited.pt"
    torch.save(payload, edited)
    for command in (["info", str(edited)], ["sample", str(edited), "--length", "5"]):
        proc = run_charnn(*command)
        assert proc.returncode == 1 and proc.stdout == ""
        assert proc.stderr.strip().splitlines() == [
            f"Error: {edited} is not a usable charnn checkpoint (hidden_size must be a whole "
            "number (or left unset), not '16')"
        ]


def test_an_unreadable_checkpoint_says_so(run_dir, monkeypatch):
    _, folder = run_dir

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "open", denied)  # as for a file of another user's, even as root
    with pytest.raises(CharnnError, match=r"cannot be read \(Permission denied\)"):
        read_payload(folder / "last.pt")


class _CreatesFile:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_checkpoint_carrying_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    hostile = tmp_path / "hostile.pt"
    torch.save({"format_version": 1, "evil": _CreatesFile(marker)}, hostile, pickle_protocol=2)
    assert not marker.exists()  # saving did not run it...
    with pytest.raises(CharnnError, match="refusing"):
        read_payload(hostile)
    assert not marker.exists()  # ...and neither did loading


def bytes_read() -> int:
    """Bytes this process has read through system calls so far (Linux)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


@pytest.mark.skipif(not Path("/proc/self/io").is_file(), reason="reads Linux's /proc/self/io")
def test_finding_and_listing_runs_never_read_the_tensors(tmp_path):
    vocab = Vocab("abc")
    model = CharRNN(ModelSpec(vocab_size=3, hidden_size=16, cell="gru"))
    big = {"state": {0: {"exp_avg": torch.ones(4_000_000)}}, "param_groups": []}  # 16 MB
    settings = TrainConfig(corpus="c.txt").to_dict()
    payload = make_payload(model, vocab, settings, big, 7, {"val_bpc": 1.5})
    (tmp_path / "ck" / "run").mkdir(parents=True)
    save_atomic(payload, tmp_path / "ck" / "run" / "last.pt")
    size = (tmp_path / "ck" / "run" / "last.pt").stat().st_size
    start = bytes_read()
    summary = summarize_checkpoint(tmp_path / "ck" / "run" / "last.pt")
    assert find_checkpoint(tmp_path / "ck", cell="gru") == tmp_path / "ck" / "run" / "last.pt"
    (listed,) = list_runs(tmp_path / "ck")
    assert bytes_read() - start < size / 20  # three reads of the file, none of its tensors
    parameters = sum(p.numel() for p in model.parameters())
    assert (summary["step"], summary["metrics"], summary["vocab"]) == (7, {"val_bpc": 1.5}, "abc")
    assert (summary["parameters"], summary["model_config"]["cell"]) == (parameters, "gru")
    assert (listed["cell"], listed["parameters"], listed["steps"]) == ("gru", parameters, 7)


def test_a_checkpoint_from_before_mogrifier_rounds_loads_and_a_mogrifier_keeps_its_own(tmp_path):
    """Checkpoints older than the setting have no mogrifier_rounds anywhere: they still load. A
    mogrifier's rounds come back from its checkpoint, not from the default."""
    vocab = Vocab("abc")
    for cell, rounds in (("lstm", None), ("mogrifier", 2)):
        model = CharRNN(ModelSpec(vocab_size=3, hidden_size=8, cell=cell,
                                  mogrifier_rounds=2 if rounds else 5))  # fmt: skip
        settings = TrainConfig(corpus="c.txt", model=model.config).to_dict()
        payload = make_payload(model, vocab, settings, {}, 1, {})
        if rounds is None:  # as saved before the setting existed
            del payload["model_config"]["mogrifier_rounds"]
            del payload["train_config"]["model"]["mogrifier_rounds"]
        save_atomic(payload, tmp_path / f"{cell}.pt")
        loaded = load_checkpoint(tmp_path / f"{cell}.pt")
        assert loaded.model.config.mogrifier_rounds == (rounds or 5)
        assert loaded.model.state_dict().keys() == model.state_dict().keys()
        for name, tensor in model.state_dict().items():
            assert torch.equal(loaded.model.state_dict()[name], tensor), name
