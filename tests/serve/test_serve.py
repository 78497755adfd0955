"""`charnn serve`: a real server process on a free local port, spoken to over HTTP."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from urllib.parse import quote

import pytest

from conftest import CHARNN, run_charnn

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")


@contextmanager
def server(checkpoint, *args: str, env_extra: dict[str, str] | None = None):
    """Start `charnn serve` on a free port; yield (url, process); Ctrl-C it at the end."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARNN_")}
    env.update(env_extra or {}, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [*CHARNN, "serve", str(checkpoint), "--port", "0", "--no-access-log", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: list[str] = []
    url = None
    deadline = time.monotonic() + 120
    while url is None and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("charnn serve:"):
            url = line.split(" on ")[1].split()[0]
    assert url, "".join(lines)
    rest: list[str] = []
    reader = threading.Thread(target=lambda: rest.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        stdout = proc.stdout.read()
        code = proc.wait(timeout=30)
        reader.join(timeout=5)
    log = "".join(lines + rest)
    assert code == 130, log  # Ctrl-C: a clean shutdown, exit 130
    assert "Traceback" not in log, log
    assert stdout == ""  # stdout carries data only, and a server has none


@pytest.fixture(scope="module")
def served(trained):
    """One server for the tests that only read from it, with a high --max-length."""
    with server(trained[2], "--max-length", "1000000") as (url, _):
        yield url, trained[2]


def post(url: str, body, **kwargs):
    content = body if isinstance(body, str | bytes) else json.dumps(body)
    return httpx.post(f"{url}/v1/sample", content=content, timeout=60, **kwargs)


def test_torch_rnn_server_routes(served):
    url, _ = served
    home = httpx.get(url + "/", timeout=30)
    assert home.status_code == 200 and isinstance(home.json()["message"], str)

    start = 'Said   Romeo\n to "Juliet" +100%'  # spaces, a newline, a plus, a percent sign
    answer = httpx.get(f"{url}/generate?start_text={quote(start, safe='')}&n=3", timeout=60)
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"start_text", "completions", "time"}
    assert "message" not in body  # rnn-writer reads a "message" as an error
    # rnn-writer's own check: decodeURIComponent(start_text).replace(/\+/g, " ") == what it sent
    from urllib.parse import unquote

    assert unquote(body["start_text"]).replace("+", " ") == start.replace("+", " ")
    assert float(body["time"]) >= 0
    assert len(body["completions"]) == 3
    for completion in body["completions"]:
        assert completion[-1] in ".!?", completion  # a sentence end
        assert 3 <= completion.count(" ") <= 19, completion  # a few words, 20 at most
        assert len(completion) <= 140

    assert (
        len(httpx.get(f"{url}/generate?start_text=the&n=50", timeout=60).json()["completions"])
        <= 10
    )


def test_seeded_sample_is_reproducible_and_is_what_charnn_sample_gives(served):
    url, checkpoint = served
    body = {"prime": "The ", "length": 120, "temperature": 0.8, "top_k": 20, "seed": 7}
    first, second = post(url, body).json(), post(url, body).json()
    assert first["samples"] == second["samples"]
    assert first["seed"] == 7 and first["prime"] == "The "
    (only,) = first["samples"]
    assert len(only["text"]) == 120 and only["finish_reason"] == "length"
    other = post(url, {**body, "seed": 8}).json()["samples"][0]["text"]
    assert other != only["text"]
    cli = run_charnn(
        "sample", str(checkpoint), "--prime", "The ", "--length", "120", "-t", "0.8",
        "--top-k", "20", "--seed", "7", "--no-echo-prime",
    )  # fmt: skip
    assert cli.stdout == only["text"]

    several = post(url, {"prime": "The ", "length": 50, "num_samples": 3, "seed": 1}).json()
    assert [s["index"] for s in several["samples"]] == [0, 1, 2]
    assert len({s["text"] for s in several["samples"]}) == 3


def test_beam_search_answers_what_charnn_sample_gives(served):
    url, checkpoint = served
    body = {"prime": "The ", "length": 60, "beam": 3}
    answer = post(url, body).json()
    (only,) = answer["samples"]
    cli = run_charnn("sample", str(checkpoint), "--prime", "The ", "--length", "60",
                     "--beam", "3", "--no-echo-prime")  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert only["text"] == cli.stdout and len(only["text"]) == 60
    for bad in ({**body, "stream": True}, {**body, "temperature": 0.5}, {**body, "beam": 0}):
        refused = post(url, bad)
        assert refused.status_code == 400 and "beam" in refused.json()["message"]


def test_stop_strings_end_samples(served):
    url, _ = served
    body = {"prime": "The ", "length": 2000, "stop": ["\n"], "num_samples": 4, "seed": 3}
    samples = post(url, body).json()["samples"]
    for s in samples:
        assert "\n" not in s["text"]
        assert s["finish_reason"] == "stop" or len(s["text"]) == 2000


def read_events(response):
    """(event name, data) pairs of a server-sent-events response, as they arrive."""
    event, data = "message", []
    for line in response.iter_lines():
        if line.startswith("event: "):
            event = line[len("event: ") :]
        elif line.startswith("data: "):
            data.append(line[len("data: ") :])
        elif not line and data:
            yield event, json.loads("\n".join(data))
            event, data = "message", []


def test_a_stream_is_the_samples_text_in_pieces_then_one_end_event(served):
    """How many writes the pieces take depends on how fast the client reads: the engine's own
    test counts them; here the pieces add up to the sample, and one "end" event closes it."""
    url, _ = served
    length = 3_000
    body = {"prime": "The ", "length": length, "seed": 5, "stream": True}
    with httpx.stream("POST", f"{url}/v1/sample", json=body, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = list(read_events(response))
    pieces = [data["text"] for name, data in events if name == "message"]
    name, end = events[-1]
    assert name == "end" and [n for n, _ in events].count("end") == 1
    assert "".join(pieces) == end["samples"][0]["text"]
    assert len(end["samples"][0]["text"]) == length
    plain = post(url, {k: v for k, v in body.items() if k != "stream"}).json()
    assert plain["samples"] == end["samples"]  # streaming changes only the delivery


def health(url: str) -> dict:
    return httpx.get(f"{url}/v1/health", timeout=30).json()


def test_a_client_that_disconnects_stops_its_generation(served):
    url, _ = served
    body = {"prime": "The ", "length": 1_000_000, "stream": True}
    with httpx.stream("POST", f"{url}/v1/sample", json=body, timeout=60) as response:
        events = read_events(response)
        next(events)
        next(events)
        assert health(url)["active_rows"] >= 1  # still generating while we listen
    deadline = time.monotonic() + 10
    while health(url)["active_rows"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert health(url)["active_rows"] == 0


def test_model_description(served):
    url, _ = served
    info = httpx.get(f"{url}/v1/model", timeout=30).json()
    assert info["cell"] == "lstm" and info["layers"] == 1 and info["hidden_size"] == 32
    assert info["vocab_size"] == len(info["vocab"]) > 10
    assert info["limits"]["max_length"] == 1_000_000


def test_the_page_says_its_policy_in_a_header_too_and_may_not_be_framed(served):
    url, _ = served
    page = httpx.get(f"{url}/ui", timeout=30)
    policy = page.headers["content-security-policy"]
    meta = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', page.text)
    assert meta and policy.startswith(meta.group(1))  # the page's own, and more
    assert "frame-ancestors 'none'" in policy  # only a header can say it


BAD_REQUESTS = [
    ("malformed JSON", '{"prime": "The ", "length": 10', 400, "not valid JSON"),
    ("not an object", "[1, 2, 3]", 400, "JSON object"),
    ("unknown field", {"prime": "a", "lenght": 10}, 400, "lenght"),
    ("wrong type", {"length": "ten"}, 400, "length must be an integer"),
    ("a boolean for a number", {"temperature": True}, 400, "temperature"),
    ("negative temperature", {"temperature": -1}, 400, "temperature"),
    ("top_p out of range", {"top_p": 1.5}, 400, "top_p"),
    ("top_k zero", {"top_k": 0}, 400, "top_k"),
    ("length over the limit", {"length": 1_000_001}, 400, "max-length"),
    ("zero samples", {"num_samples": 0}, 400, "num_samples"),
    ("unseen characters", {"prime": "The \u263a\u00e9"}, 400, "never saw"),
    ("empty stop string", {"stop": ["x", ""]}, 400, "stop"),
    ("a non-finite number", '{"temperature": NaN}', 400, "finite"),
]


@pytest.mark.parametrize(
    "body, status, says", [b[1:] for b in BAD_REQUESTS], ids=[b[0] for b in BAD_REQUESTS]
)
def test_bad_requests_get_a_json_error_and_the_server_keeps_serving(served, body, status, says):
    url, _ = served
    answer = post(url, body)
    assert answer.status_code == status
    error = answer.json()
    assert says in error["error"] and error["message"] == error["error"]
    assert httpx.get(url + "/", timeout=30).status_code == 200


def test_bad_paths_methods_and_counts_get_json_errors(served):
    url, _ = served
    for answer, status in [
        (httpx.get(f"{url}/nowhere", timeout=30), 404),
        (httpx.get(f"{url}/v1/sample", timeout=30), 405),
        (httpx.get(f"{url}/generate?start_text=a&n=many", timeout=30), 400),
    ]:
        assert answer.status_code == status
        assert answer.json()["error"]
    assert post(url, b"x" * (1 << 21)).status_code == 413


def test_concurrent_clients_each_get_their_sample_and_every_row_is_stepped_once(served):
    """How many rows share a step depends on when the clients connect: the engine's own test
    shows requests admitted together share every step."""
    url, _ = served
    before = health(url)
    length, start = 300, threading.Barrier(16)

    def client(i: int) -> dict:
        start.wait()
        return post(url, {"prime": "The ", "length": length, "seed": i}).json()

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(client, range(16)))
    for answer in answers:
        assert len(answer["samples"][0]["text"]) == length
    after = health(url)
    steps = after["steps"] - before["steps"]
    rows = after["rows_stepped"] - before["rows_stepped"]
    assert rows == 16 * (length - 1)  # every character but each sample's first is one row
    assert 0 < steps <= rows


def test_the_api_key_is_needed_when_set(trained):
    with server(trained[2], env_extra={"CHARNN_API_KEY": "s3cret"}) as (url, _):
        missing = httpx.get(url + "/", timeout=30)
        wrong = httpx.get(url + "/generate?start_text=a", headers={"x-api-key": "nope"}, timeout=30)
        for answer in (missing, wrong):
            assert answer.status_code == 403
            assert answer.json()["message"] == "Forbidden"  # what rnn-writer recognises
            assert "x-api-key" in answer.json()["error"]
        assert post(url, {"length": 5}).status_code == 403
        key = {"x-api-key": "s3cret"}
        assert httpx.get(url + "/", headers=key, timeout=30).status_code == 200
        assert len(post(url, {"length": 5}, headers=key).json()["samples"][0]["text"]) == 5


def test_ctrl_c_ends_open_streams_and_exits_130(trained):
    with server(trained[2], "--max-length", "1000000") as (url, proc):
        body = {"length": 1_000_000, "stream": True}
        with httpx.stream("POST", f"{url}/v1/sample", json=body, timeout=60) as response:
            events = read_events(response)
            next(events)
            proc.send_signal(signal.SIGINT)
            name, end = list(events)[-1]
        assert name == "end" and end["samples"][0]["finish_reason"] == "cancelled"
        proc.wait(timeout=30)  # the fixture checks exit 130 and a quiet log


def test_serve_reports_a_missing_checkpoint_in_one_line(tmp_path):
    proc = run_charnn("serve", str(tmp_path / "none.pt"), "--port", "0")
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "not found" in proc.stderr


def test_the_address_is_announced_only_once_a_client_can_connect(trained):
    """A client that connects the moment it hears the address is queued, not refused: the
    socket listens before `on_ready`, although the event loop has not started yet."""
    import socket

    from charnn.checkpoints.loading import load_checkpoint
    from charnn.serve.app import ServeSettings
    from charnn.serve.server import serve

    class Heard(Exception):
        pass

    def connect_now(url: str) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5):
            raise Heard  # connected; stop before serving

    with pytest.raises(Heard):
        serve(load_checkpoint(trained[2] / "best.pt"), ServeSettings(), port=0,
              on_ready=connect_now)  # fmt: skip
