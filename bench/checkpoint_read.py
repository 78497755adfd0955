"""What reading a checkpoint's summary costs: torch.load with and without mmap, cold cache.

    python bench/checkpoint_read.py [--runs 10] [--hidden-size 512]

Writes `--runs` checkpoints of a 2-layer LSTM with its AdamW state into a temporary folder,
then, for each way of loading, evicts them from the page cache (posix_fadvise, Linux) and reads
each one's step, configs and parameter count as `charnn list` does. Prints the milliseconds and
the bytes read from disk per checkpoint (/proc/self/io), two alternating passes of each.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from charnn.checkpoints.format import make_payload, save_atomic
from charnn.config.model import ModelSpec
from charnn.config.train import RunConfig
from charnn.nn.model import CharRNN
from charnn.text.vocab import Vocab


def write_checkpoints(root: Path, runs: int, hidden_size: int) -> list[Path]:
    vocab = Vocab("".join(chr(c) for c in range(32, 97)))
    model = CharRNN(ModelSpec(vocab_size=len(vocab), layers=2, hidden_size=hidden_size))
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.zeros(1, 4, dtype=torch.long))[0].sum().backward()
    optimizer.step()  # fills the optimizer's state: two tensors per weight
    config = RunConfig(corpus="corpus.txt", model=model.config).to_dict()
    payload = make_payload(model, vocab, config, optimizer.state_dict(), 100, {})
    paths = [root / f"run{i}.pt" for i in range(runs)]
    for path in paths:
        save_atomic(payload, path)
    return paths


def evict(paths: list[Path]) -> None:
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)


def disk_bytes() -> int:
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(fields["read_bytes"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--hidden-size", type=int, default=512)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        paths = write_checkpoints(Path(folder), args.runs, args.hidden_size)
        size = paths[0].stat().st_size
        print(f"{args.runs} checkpoints of {size / 1e6:.1f} MB (2x{args.hidden_size} LSTM, AdamW)")
        for mmap in (False, True, False, True):
            evict(paths)
            before, start = disk_bytes(), time.perf_counter()
            for path in paths:
                payload = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
                sum(t.numel() for t in payload["model_state"].values())
                del payload
            seconds = (time.perf_counter() - start) / len(paths)
            read = (disk_bytes() - before) / len(paths)
            print(f"mmap={mmap}: {seconds * 1000:.1f} ms, {read / 1e6:.2f} MB read per checkpoint")


if __name__ == "__main__":
    main()
