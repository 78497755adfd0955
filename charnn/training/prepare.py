"""Run folders: preparing a run (resume or start, settings merged and planned, folder claimed),
one writer at a time, listing."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from charnn.checkpoints.format import (
    TRAINING_FIELDS,
    check_fields,
    load_path,
    read_payload,
    summarize_checkpoint,
)
from charnn.config.train import ModelConfig, TrainConfig
from charnn.errors import CharnnError
from charnn.evaluation.evaluator import chars_read
from charnn.fileio import BEST, LAST, LOCK, METRICS_LOG
from charnn.text.corpus import EncodedCorpus
from charnn.text.vocab import Vocab, describe_chars
from charnn.training.plan import Facts, Plan, needs_speeds, plan_run, saved_plan

# What may change when a run is resumed: when to stop, how often to save, where to compute.
# Everything else decides the arithmetic and must match the run being continued.
RESUMABLE = {
    "max_steps",
    "epochs",
    "time_budget",
    "eval_every",
    "patience",
    "save_every",
    "keep",
    "on_nan",
    "device",
    "threads",
    "checkpoint_dir",
    "name",
    "corpus",
}


def default_name(corpus: Path, cell: str) -> str:
    return f"{corpus.stem}-{cell}"


def holds_checkpoint(run_dir: Path) -> bool:
    """Whether a folder holds a saved run (a run that failed before its first save does not)."""
    return any(run_dir.glob("*.pt"))


def claim_run_dir(config: TrainConfig, corpus_path: Path, run_dir: Path | None = None) -> Path:
    """Create a fresh run folder (or take `run_dir`), never reusing one that holds a checkpoint.

    A folder left by a run that failed before its first save holds no checkpoint: it is taken
    as new, its metrics of steps that were never saved cleared.
    """
    root = Path(config.checkpoint_dir) if run_dir is None else run_dir.parent
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CharnnError(f"cannot create checkpoint folder {root}: {err.strerror}") from None
    if run_dir is None and config.name is not None:
        run_dir = root / config.name
    if run_dir is not None:
        try:
            run_dir.mkdir()
        except FileExistsError:
            if holds_checkpoint(run_dir):
                raise CharnnError(
                    f"run folder {run_dir} already exists: continue it with --resume {run_dir}, "
                    "or choose another --name"
                ) from None
            (run_dir / METRICS_LOG).unlink(missing_ok=True)
        return run_dir
    base = default_name(corpus_path, config.model.cell)
    for index in range(1, 10_000):
        run_dir = root / (base if index == 1 else f"{base}-{index}")
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            continue
    raise CharnnError(f"too many runs named {base} under {root}: pass --name")


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run folder for one writer. The operating system releases the lock when the
    process ends, however it ends, so a crashed run never leaves it stuck."""
    try:
        import fcntl
    except ImportError:  # no advisory locks on this platform: run unguarded
        yield
        return
    with open(run_dir / LOCK, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise CharnnError(
                f"run folder {run_dir} is being written by another charnn train (pid {holder}); "
                "wait for it to finish, or use another --name"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield


def resume_checkpoint(resume: str, config: TrainConfig, corpus: Path) -> Path | None:
    """The checkpoint `--resume` names; None when its run folder holds no checkpoint yet (`auto`
    before the run's first save, or a folder left by a run that failed before saving): the run
    then starts there as new."""
    if resume == "auto":
        name = config.name or default_name(corpus, config.model.cell)
        candidate = Path(config.checkpoint_dir) / name / LAST
        return candidate if candidate.is_file() else None
    path = Path(resume)
    if path.is_dir():
        if not holds_checkpoint(path):
            return None
        path = path / LAST
    if not path.is_file():
        raise CharnnError(f"nothing to resume: {path} not found")
    return path


def check_resumable(config: TrainConfig, saved: TrainConfig, path: Path) -> None:
    """Refuse to continue a run with settings that would change its arithmetic."""
    differences = []
    for f in fields(TrainConfig):
        if f.name in RESUMABLE:
            continue
        if f.name == "model":
            for m in fields(ModelConfig):
                ours, theirs = getattr(config.model, m.name), getattr(saved.model, m.name)
                if m.name != "vocab_size" and ours != theirs:
                    differences.append(f"--{m.name.replace('_', '-')} {ours} (run: {theirs})")
        elif getattr(config, f.name) != getattr(saved, f.name):
            ours, theirs = getattr(config, f.name), getattr(saved, f.name)
            differences.append(f"--{f.name.replace('_', '-')} {ours} (run: {theirs})")
    if differences:
        raise CharnnError(
            f"cannot resume {path} with different settings: {'; '.join(differences)}; leave "
            "them out to continue as the run was, or start a new run with --init-from"
        )


def list_runs(checkpoint_dir: str | Path) -> list[dict[str, Any]]:
    """One summary per run folder under `checkpoint_dir`, newest first."""
    root = Path(checkpoint_dir)
    runs: list[dict[str, Any]] = []
    for run_dir in sorted(root.iterdir()) if root.is_dir() else []:
        files = [run_dir / n for n in (LAST, BEST) if (run_dir / n).is_file()]
        if not files:
            continue
        try:
            described = summarize_checkpoint(files[0])  # its tensors are never read
        except CharnnError as err:
            runs.append({"name": run_dir.name, "error": str(err)})
            continue
        model, metrics = described["model_config"], described["metrics"]
        modified = max(f.stat().st_mtime for f in files)
        runs.append(
            {
                "name": run_dir.name,
                "cell": model["cell"],
                "layers": model["layers"],
                "hidden_size": model["hidden_size"],
                "parameters": described["parameters"],
                "steps": described["step"],
                "best_val_bpc": metrics.get("best_val_bpc"),
                "corpus": described["train_config"].get("corpus"),
                "modified": datetime.fromtimestamp(modified).isoformat(timespec="seconds"),
                "_mtime": modified,
            }
        )
    runs.sort(key=lambda r: r.get("_mtime", 0), reverse=True)
    for r in runs:
        r.pop("_mtime", None)
    return runs


@dataclass
class PreparedRun:
    """What a run starts from: its decided settings, vocabulary and folder, and a checkpoint."""

    config: TrainConfig  # every setting decided (planned, or taken from the run resumed)
    vocab: Vocab
    run_dir: Path
    fresh: bool  # the folder was claimed by this run (removed again if it fails before saving)
    checkpoint: dict[str, Any] | None  # the run to continue (`resumed`), or weights to start from
    resumed: bool
    notices: list[str]
    plan: dict[str, Any] | None  # what the plan chose and why (charnn.training.plan.Plan.record)


def prepare_run(
    config: TrainConfig,
    corpus: EncodedCorpus,
    *,
    measure: Callable[[TrainConfig, Facts, int], Facts] | None = None,
    native_bf16: bool = False,
    resume: str | Path | None = None,
    init_from: str | Path | None = None,
    given: set[str] | None = None,
    on_main: Any = lambda work: work(),
) -> PreparedRun:
    """Decide where a run starts and with which settings; see charnn.trainer.train.

    `given`: the settings chosen explicitly now (default: those `config` gives a value). When
    resuming, the others come from the run; with `init_from`, the model's shape comes from the
    weights. Whatever is still unset is planned (training.plan), from the corpus's size, whether
    the CPU multiplies bf16 in hardware and, for a time budget, the speeds
    `measure(config, facts, vocab_size)` finds (training.calibrate). `on_main` runs the folder
    choices and the plan on one process of a torchrun job and hands their result to all.
    """
    given = config.chosen() if given is None else given
    corpus_path = Path(config.corpus_paths[0])  # names the run
    path = None
    if resume is not None:
        path = on_main(lambda: resume_checkpoint(str(resume), config, corpus_path))
    if path is not None:
        payload = read_payload(path)
        check_fields(payload, path, TRAINING_FIELDS, "cannot be resumed",
                     f": --init-from {path} starts a new run from its weights")  # fmt: skip
        saved = saved_settings(payload["train_config"], path)
        config = merged_config(saved, config, given)
        check_resumable(config, saved, path)
        vocab = Vocab(payload["vocab"])
        check_same_corpus(payload, corpus, vocab, path)
        return PreparedRun(
            config, vocab, path.parent, False, payload, True, [], saved_plan(payload.get("plan"))
        )

    vocab, weights = corpus.vocab, None
    if init_from is not None:
        source = load_path(init_from)
        payload = weights = read_payload(source)
        vocab = Vocab.from_text(payload["vocab"] + vocab.chars)  # both runs' characters
        saved = saved_settings({"model": payload["model_config"]}, source)  # the weights' shape
        config = replace(config, model=merged_config(saved, config, given).model)
    train_chars = corpus.train_end(config.val_frac)
    eval_read = chars_read(len(corpus.ids) - train_chars - 1, config.eval_chars)
    facts = Facts(train_chars, native_bf16, eval_chars_read=max(0, eval_read))

    def planned() -> Plan:
        measured = facts
        if measure and needs_speeds(config):
            measured = measure(config, facts, len(vocab))
        return plan_run(config, measured)

    plan = on_main(planned)
    config = plan.config
    if resume == "auto" and config.name is None:
        config = replace(config, name=default_name(corpus_path, config.model.cell))
    folder = Path(resume) if resume not in (None, "auto") else None  # a folder with no checkpoint
    run_dir = on_main(lambda: claim_run_dir(config, corpus_path, folder))
    notices = [plan.notice] if plan.notice else []
    return PreparedRun(config, vocab, run_dir, True, weights, False, notices, plan.record())


def check_same_corpus(payload: dict, corpus: EncodedCorpus, vocab: Vocab, path: Path) -> None:
    """Refuse to continue a run on text other than the one it was trained on."""
    if payload.get("corpus_sha256") == corpus.sha256:
        return
    if payload.get("corpus_files") and corpus.files:
        before = {path: sha for path, sha in payload["corpus_files"]}
        now = dict(corpus.files)
        changes = [f"{p} changed" for p in now if p in before and now[p] != before[p]]
        changes += [f"{p} added" for p in now if p not in before]
        changes += [f"{p} removed" for p in before if p not in now]
        if changes:
            raise CharnnError(
                f"cannot resume {path}: the corpus is not the text the run was trained on "
                f"({'; '.join(changes[:5])}{'; ...' if len(changes) > 5 else ''}); start a new "
                "run from it with --init-from instead"
            )
    ours = corpus.vocab
    if ours.chars != vocab.chars:
        new = sorted(set(ours.chars) - set(vocab.chars))
        gone = sorted(set(vocab.chars) - set(ours.chars))
        detail = f"new characters {describe_chars(new)}" if new else ""
        detail += ("; " if new and gone else "") + (
            f"missing {describe_chars(gone)}" if gone else ""
        )
        raise CharnnError(
            f"cannot resume {path} on this corpus: its vocabulary differs ({detail}); start a new "
            "run from it with --init-from instead"
        )
    raise CharnnError(
        f"cannot resume {path}: this corpus is not the text the run was trained on (its SHA-256 "
        "differs); start a new run from it with --init-from instead"
    )


def saved_settings(settings: dict[str, Any], path: Path) -> TrainConfig:
    """A checkpoint's settings as TrainConfig, or one line saying they cannot be read."""
    try:
        return TrainConfig.from_dict(settings)
    except (TypeError, ValueError, AttributeError, CharnnError) as err:
        raise CharnnError(f"{path} is not a usable charnn checkpoint ({err})") from None


def merged_config(saved: TrainConfig, current: TrainConfig, given: set[str]) -> TrainConfig:
    """A saved run's settings, with the options given explicitly now on top of them.

    Where the data and checkpoints live always comes from now; a setting left unset (None)
    now is the run's.
    """
    top = {f.name: getattr(saved, f.name) for f in fields(TrainConfig)}
    model = {f.name: getattr(saved.model, f.name) for f in fields(ModelConfig)}
    for name in given:
        if name in model and getattr(current.model, name) is not None:
            model[name] = getattr(current.model, name)
        elif name in top and name != "model" and getattr(current, name) is not None:
            top[name] = getattr(current, name)
    top["corpus"], top["checkpoint_dir"] = current.corpus, current.checkpoint_dir
    top["model"] = ModelConfig(**model)
    return TrainConfig(**top)
