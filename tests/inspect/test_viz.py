"""Looking inside: traced gates against the fused modules, feature search on a hand-built
quote-tracking unit, saturation against a hand computation, the HTML page and the plot."""

import json
import re
import subprocess
import sys
from html.parser import HTMLParser

import numpy as np
import pytest
import torch

from charnn.checkpoints.format import make_payload, save_atomic
from charnn.checkpoints.loading import LoadedModel, load_checkpoint
from charnn.config.model import ModelSpec
from charnn.config.train import TrainConfig
from charnn.errors import CharnnError
from charnn.inspect.trace import trace
from charnn.inspect.viz import feature, saturation
from charnn.nn.model import CharRNN
from charnn.text.vocab import Vocab

from conftest import make_text, run_charnn


def loaded_model(cell, text, seed=0, layers=2, hidden=12, scale=1.0, **settings):
    torch.manual_seed(seed)
    vocab = Vocab.from_text(text)
    config = ModelSpec(vocab_size=len(vocab), cell=cell, layers=layers, hidden_size=hidden,
                       embed_size=6, **settings)  # fmt: skip
    model = CharRNN(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    return LoadedModel(model, vocab, path=None, train_config=None, step=0)  # type: ignore[arg-type]


def save(loaded, path):
    config = TrainConfig(corpus="corpus.txt", model=loaded.model.config)
    save_atomic(make_payload(loaded.model, loaded.vocab, config.to_dict(), {}, 0, {}), path)
    return path


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru", "mogrifier"])
def test_traced_states_are_what_the_fused_module_computes(cell):
    text = make_text(300)
    loaded = loaded_model(cell, text)
    traced = trace(loaded, text)
    ids = torch.from_numpy(loaded.vocab.encode(text).astype(np.int64))[None]
    with torch.no_grad():
        out, state = loaded.model.rnn(loaded.model.embed(ids))
    top = traced.values["hidden"][-1]  # (T, H), the last layer
    assert np.allclose(top, out[0].numpy(), atol=1e-5)
    if cell in ("lstm", "mogrifier"):  # the cell state after the last character, every layer
        assert np.allclose(traced.values["cell"][:, -1], state[1][:, 0].numpy(), atol=1e-5)
    with torch.no_grad():
        probs = torch.softmax(loaded.model(ids)[0][0, 10], -1)
    best = int(probs.argmax())
    assert traced.next_chars[10][0] == (loaded.vocab.chars[best], pytest.approx(float(probs[best])))


def test_the_mogrifier_shows_what_its_rounds_multiply_h_by():
    """mogrify: ∏ 2σ(R^i·x) over the even rounds, from the paper's equations by hand for
    layer 0 (whose h_{t−1} is the traced hidden state before it); all ones without an R."""
    text = "hello world, hello again\n"
    loaded = loaded_model("mogrifier", text, layers=1, hidden=6, scale=3.0, mogrifier_rounds=4)
    params = {n: p.detach().numpy() for n, p in loaded.model.rnn.named_parameters()}
    embed = loaded.model.embed.weight.detach().numpy()
    traced = trace(loaded, text)
    h, expected = np.zeros(6), []

    def gate(a):
        return 2 / (1 + np.exp(-a))

    for t, char in enumerate(text):
        x = embed[loaded.vocab.chars.index(char)]
        x = gate(params["mogrifier_q1_l0"] @ h) * x
        r2 = gate(params["mogrifier_r2_l0"] @ x)
        x = gate(params["mogrifier_q3_l0"] @ (r2 * h)) * x
        expected.append(r2 * gate(params["mogrifier_r4_l0"] @ x))
        h = traced.values["hidden"][0, t]
    assert np.allclose(traced.values["mogrify"][0], expected, atol=1e-5)
    assert np.abs(np.array(expected) - 1).max() > 0.5  # the rounds do scale h
    one_round = loaded_model("mogrifier", text, layers=1, hidden=6, mogrifier_rounds=1)
    assert np.array_equal(trace(one_round, text).values["mogrify"], np.ones((1, len(text), 6)))


def test_features_of_the_text():
    text = 'a "b" (c[d])\nef'
    assert feature(text, "quotes").tolist() == [0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    assert feature(text, "line-position").tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0,
                                                       1, 2]  # fmt: skip
    assert feature(text, "brackets").tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 2, 2, 1, 0, 0, 0, 0]
    assert feature(text, "[b-d]").tolist() == [0, 0, 0, 1, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0]
    with pytest.raises(CharnnError, match="regular expression"):
        feature(text, "(")
    with pytest.raises(CharnnError, match="never changes"):
        feature("no quotes here", "quotes")


def quote_tracker(text):
    """An LSTM whose unit 0 is wired by hand to flip its cell state at every double quote:
    at a quote the forget gate shuts, the input gate opens and the candidate is -sign(h0)."""
    loaded = loaded_model("lstm", text, layers=1, hidden=8)
    model, H = loaded.model, 8
    quote = loaded.vocab.chars.index('"')
    rnn = model.rnn
    with torch.no_grad():
        model.embed.weight[:, 0] = 0.0
        model.embed.weight[quote, 0] = 1.0  # embedding dimension 0 says "this is a quote"
        for block in range(4):  # rows i, f, C~, o of unit 0
            rnn.weight_ih_l0[block * H].zero_()
            rnn.weight_hh_l0[block * H].zero_()
            rnn.bias_hh_l0[block * H] = 0.0
        rnn.weight_ih_l0[0, 0], rnn.bias_ih_l0[0] = 40.0, -20.0  # input gate: open at quotes
        rnn.weight_ih_l0[H, 0], rnn.bias_ih_l0[H] = -40.0, 20.0  # forget gate: shut at quotes
        rnn.weight_hh_l0[2 * H, 0], rnn.bias_ih_l0[2 * H] = -10.0, 3.0  # candidate: flip
        rnn.bias_ih_l0[3 * H] = 20.0  # output gate always open
    return loaded


def test_find_quotes_ranks_the_quote_unit_first(tmp_path):
    text = make_text(3_000, seed=2)
    checkpoint = save(quote_tracker(text), tmp_path / "quotes.pt")
    (tmp_path / "text.txt").write_text(text, encoding="utf-8")
    proc = run_charnn("viz", str(checkpoint), str(tmp_path / "text.txt"), "--find", "quotes",
                      "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    best = found["find"][0]
    assert (best["layer"], best["unit"]) == (0, 0) and best["score"] > 0.9
    assert all(s["unit"] != 0 for s in found["find"][2:])  # the rest is far behind: others
    assert found["find"][2]["score"] < 0.9 * best["score"]
    assert found["unit"] == 0  # and the unit shown is that one
    assert len(found["values"]) == len(found["chars"]) == len(text)


def test_saturation_matches_a_hand_computation():
    text = "hello world, hello again\n"
    loaded = loaded_model("lstm", text, layers=1, hidden=6, scale=6.0)  # large weights saturate
    rnn, embed = loaded.model.rnn, loaded.model.embed.weight.detach().numpy()
    w_ih, w_hh = rnn.weight_ih_l0.detach().numpy(), rnn.weight_hh_l0.detach().numpy()
    bias = (rnn.bias_ih_l0 + rnn.bias_hh_l0).detach().numpy()
    h, c, forget = np.zeros(6), np.zeros(6), []
    for char in text:  # the LSTM equations, one character at a time
        pre = w_ih @ embed[loaded.vocab.chars.index(char)] + w_hh @ h + bias
        i, f, g, o = np.split(pre, 4)
        i, f, o, g = 1 / (1 + np.exp(-i)), 1 / (1 + np.exp(-f)), 1 / (1 + np.exp(-o)), np.tanh(g)
        c = f * c + i * g
        h = o * np.tanh(c)
        forget.append(f)
    forget = np.array(forget)
    found = {s.gate: s for s in saturation(trace(loaded, text))}
    assert set(found) == {"forget", "input", "output"}
    assert found["forget"].left == pytest.approx((forget < 0.1).mean(), abs=1e-9)
    assert found["forget"].right == pytest.approx((forget > 0.9).mean(), abs=1e-9)
    assert 0 < found["forget"].left < 1 and 0 < found["forget"].right < 1  # the case is real
    for s in found.values():
        assert 0 <= s.left <= 1 and 0 <= s.right <= 1 and s.left + s.right <= 1


class Spans(HTMLParser):
    def __init__(self):
        super().__init__()
        self.spans, self.open = [], None

    def handle_starttag(self, tag, attrs):
        if tag == "span":
            self.open = dict(attrs)

    def handle_data(self, data):
        if self.open is not None:
            self.spans.append((self.open, data))
            self.open = None


def test_html_has_one_coloured_element_per_character_with_its_value(trained, tmp_path):
    _, _, run = trained
    text = 'Said Romeo "hello"\nto Juliet.'
    page = tmp_path / "page.html"
    proc = run_charnn("viz", str(run), "--text", text, "--what", "forget", "--unit", "3",
                      "--layer", "0", "--saturation", "--html", str(page))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    parser = Spans()
    parser.feed(page.read_text(encoding="utf-8"))
    spans = [(attrs, data) for attrs, data in parser.spans if attrs.get("class") == "c"]
    assert len(spans) == len(text)
    expected = trace(load_checkpoint(run), text).unit("forget", 0, 3)
    for (attrs, shown), char, value in zip(spans, text, expected, strict=True):
        assert shown == {"\n": "⏎"}.get(char, char)
        assert float(attrs["data-v"]) == pytest.approx(value, abs=1e-4)
        assert re.fullmatch(r"background:rgb\(\d+,\d+,\d+\)", attrs["style"])
        assert len(json.loads(attrs["data-next"])) == 5
    assert "Gate saturation" in page.read_text(encoding="utf-8")
    assert "forget" in proc.stdout  # the saturation table is printed too


def test_viz_errors_are_one_line(trained):
    _, _, run = trained
    for args, message in [
        (["--text", "abc", "--what", "update"], "a lstm cell has no update"),
        (["--text", "abc", "--unit", "999"], "--unit 999"),
        (["--text", "abc€"], "never saw: '€'"),
        (["--text", "abc", "--find", "quotes"], "never changes"),
    ]:
        proc = run_charnn("viz", str(run), *args)
        assert proc.returncode == 1 and message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


def test_plot_writes_a_png(trained, tmp_path):
    _, _, run = trained
    out = tmp_path / "curves.png"
    proc = run_charnn("plot", str(run), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_plot_without_matplotlib_says_how_to_get_it(trained, tmp_path):
    _, _, run = trained
    blocked = "import sys; sys.modules['matplotlib'] = None; from charnn.cli import main; main()"
    proc = subprocess.run([sys.executable, "-c", blocked, "plot", str(run), "--out",
                           str(tmp_path / "c.png")], capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 1
    assert "pip install 'charnn[plot]'" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "c.png").exists()
