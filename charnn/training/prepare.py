"""Where a run starts, and with which settings: resume a run, or plan and claim a new one.

    request (TrainConfig) ──resume──> the saved run's settings, the ones given now on top
                          └─new run─> facts (split size, speeds) -> plan -> a claimed folder

Either way the result holds a RunConfig with every setting decided, before anything is built.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from charnn.checkpoints import folder, hf
from charnn.checkpoints.format import (
    TRAINING_FIELDS,
    check_fields,
    checkpoint_path,
    optional,
    read_payload,
)
from charnn.checkpoints.summary import saved_plan
from charnn.config.model import ModelConfig, ModelSpec
from charnn.config.train import RunConfig, TrainConfig
from charnn.errors import CharnnError, SettingError, literal
from charnn.evaluation.scoring import chars_read
from charnn.text.corpus import EncodedCorpus
from charnn.text.vocab import Vocab, describe_chars
from charnn.training.plan import Facts, Plan, needs_speeds, plan_run

# What may change when a run is resumed: when to stop, how often to save, where to compute.
# Everything else decides the arithmetic and must match the run being continued.
RESUMABLE = {
    "max_steps", "epochs", "time_budget", "eval_every", "patience", "save_every", "keep",
    "on_nan", "device", "threads", "checkpoint_dir", "name", "corpus", "tensorboard",
}  # fmt: skip


# How a run read its corpus: the corpus is read before the run's other settings are merged, so a
# resumed run takes these from the run first (unless given now), to read the text the same way
READING = ("encoding", "glob", "separator", "doc_per_line", "label_from", "text_field",
           "label_field", "val_frac")  # fmt: skip


@dataclass
class PreparedRun:
    """What a run starts from: its decided settings, vocabulary and folder, and a checkpoint."""

    config: RunConfig  # every setting decided (planned, or taken from the run resumed)
    vocab: Vocab
    run_dir: Path
    fresh: bool  # the folder was claimed by this run (removed again if it fails before saving)
    checkpoint: dict[str, Any] | None  # the run to continue (`resumed`), or weights to start from
    resumed: bool
    notices: list[str]
    plan: dict[str, Any] | None  # what the plan chose and why (training.plan.Plan.record)


def prepare_run(
    request: TrainConfig,
    corpus: EncodedCorpus,
    *,
    measure: Callable[[TrainConfig, Facts, int], Facts] | None = None,
    native_bf16: bool = False,
    resume: str | Path | None = None,
    init_from: str | Path | None = None,
    given: set[str] | None = None,
    on_main: Any = lambda work: work(),
) -> PreparedRun:
    """Decide where a run starts and with which settings; see training.trainer.train.

    `given`: the settings chosen explicitly now (default: those `request` gives a value). When
    resuming, the others come from the run; with `init_from`, the model's shape comes from the
    weights. Whatever is still unset is planned (training.plan), from the corpus's size, whether
    the CPU multiplies bf16 in hardware and, for a time budget, the speeds
    `measure(request, facts, vocab_size)` finds. `on_main` runs the folder choices and the plan
    on one process of a torchrun job and hands their result to all.
    """
    request = replace(request, model=replace(request.model, labels=len(corpus.labels)))
    given = request.chosen() if given is None else given
    corpus_path = Path(request.corpus_paths[0])  # names the run
    path = None
    if resume is not None:
        path = on_main(lambda: resume_checkpoint(str(resume), request, corpus_path))
    if path is not None:
        return _resumed(request, corpus, path, given)
    vocab, weights = corpus.vocab, None
    if init_from is not None:
        source = checkpoint_path(init_from)
        weights = read_payload(source)
        check_same_labels(weights, corpus, source, "start from")
        vocab = Vocab.from_text(weights["vocab"] + vocab.chars)  # both runs' characters
        shape = saved_shape(weights["model_config"], source)  # the weights' shape
        request = replace(request, model=merged_model(shape, request.model, given))
    plan = on_main(lambda: _planned(request, corpus, len(vocab), native_bf16, measure))
    config = plan.config
    if resume == "auto" and config.name is None:
        config = replace(config, name=folder.default_name(corpus_path, config.model.cell))
    chosen_folder = Path(resume) if resume not in (None, "auto") else None  # one with no save
    base = folder.default_name(corpus_path, config.model.cell)
    root = Path(config.checkpoint_dir)
    run_dir = on_main(lambda: folder.claim(root, config.name, base, chosen_folder))
    notices = [plan.notice] if plan.notice else []
    return PreparedRun(config, vocab, run_dir, True, weights, False, notices, plan.record())


def _planned(
    request: TrainConfig,
    corpus: EncodedCorpus,
    vocab_size: int,
    native_bf16: bool,
    measure: Callable[[TrainConfig, Facts, int], Facts] | None,
) -> Plan:
    train_chars = corpus.train_end(request.val_frac)
    eval_read = chars_read(len(corpus.ids) - train_chars - 1, request.eval_chars)
    facts = Facts(train_chars, native_bf16, eval_chars_read=max(0, eval_read),
                  vocab_size=vocab_size)  # fmt: skip
    if measure and needs_speeds(request):
        facts = measure(request, facts, vocab_size)
    return plan_run(request, facts)


def _resumed(request: TrainConfig, corpus: EncodedCorpus, path: Path, given: set[str]):
    payload = read_payload(path)
    check_fields(payload, path, TRAINING_FIELDS, "cannot be resumed",
                 f": {{init_from}} {literal(path)} starts a new run from its weights")  # fmt: skip
    saved = saved_settings(payload["train_config"], path)
    config = merged_config(saved, request, given)
    check_resumable(config, saved, path)
    vocab = Vocab(payload["vocab"])
    check_same_corpus(payload, corpus, vocab, path)
    check_same_labels(payload, corpus, path, "resume")
    check_nothing_lost(path, payload["step"], config.max_steps)
    plan = saved_plan(payload.get("plan"))
    followed = payload["model_config"].get("decoder_dropout") is None  # saved before 900f2c9
    if plan and followed and "dropout" in plan.get("from_passes", []):
        plan = {**plan, "from_passes": [*plan["from_passes"], "decoder_dropout"]}
    return PreparedRun(config, vocab, path.parent, False, payload, True, [], plan)


def read_as_resumed(
    request: TrainConfig, resume: str | Path | None, given: set[str]
) -> TrainConfig:
    """`request` with the corpus-reading settings (READING) of the run `resume` continues, where
    they are not given now: its labels, fields, separator and split, without repeating them."""
    if resume is None:
        return request
    path = resume_checkpoint(str(resume), request, Path(request.corpus_paths[0]))
    settings = read_payload(path).get("train_config") if path is not None else None
    if path is None or not isinstance(settings, dict):  # a new run, or one _resumed refuses
        return request
    saved = saved_settings(settings, path)
    return replace(request, **{name: getattr(saved, name) for name in READING if name not in given})


def resume_checkpoint(resume: str, config: TrainConfig, corpus: Path) -> Path | None:
    """The checkpoint `resume` names; None when its run folder holds no checkpoint yet ("auto"
    before the run's first save, or a folder left by a run that failed before saving): the run
    then starts there as new."""
    if resume == "auto":
        name = config.name or folder.default_name(corpus, config.model.cell)
        return folder.latest_checkpoint(Path(config.checkpoint_dir) / name)
    path = Path(resume)
    if path.is_dir() and folder.holds_checkpoint(path) and not folder.latest_checkpoint(path):
        raise CharnnError(
            f"nothing to resume: {path} holds only best.pt, not the last state (last.pt or a "
            "step-N.pt snapshot)"
        )
    if hf.is_hf_folder(path):
        raise SettingError(
            f"{literal(path)} is a shared model's folder, which holds no training state to "
            f"continue: {{init_from}} {literal(path)} starts a new run from its weights"
        )
    if path.is_dir():
        return folder.latest_checkpoint(path)
    if not path.is_file():
        raise CharnnError(f"nothing to resume: {path} not found")
    return path


def check_nothing_lost(path: Path, step: int, max_steps: int | None) -> None:
    """Refuse a resume that would overwrite later training in the run folder (from an older
    snapshot), or that has no step left to take."""
    latest = folder.latest_checkpoint(path.parent)
    if latest is not None and latest.resolve() != path.resolve():
        later = read_payload(latest).get("step", 0)
        if isinstance(later, int) and later > step:
            raise CharnnError(
                f"cannot resume {path} (step {step:,}): its run folder holds later training "
                f"({latest.name}, step {later:,}) that resuming would overwrite; copy the "
                "checkpoint into a folder of its own to go on from it there"
            )
    if max_steps is not None and max_steps <= step:
        raise SettingError(
            f"nothing to resume: {literal(path)} is at step {step:,}, and {{max_steps}} "
            f"{max_steps:,} is not past it; give a larger {{max_steps}}"
        )


def check_resumable(config: RunConfig, saved: RunConfig, path: Path) -> None:
    """Refuse to continue a run with settings that would change its arithmetic."""
    differences = []
    for f in fields(TrainConfig):
        if f.name in RESUMABLE:
            continue
        if f.name == "model":
            for m in fields(ModelConfig):
                ours, theirs = getattr(config.model, m.name), getattr(saved.model, m.name)
                if m.name != "vocab_size" and ours != theirs:
                    differences.append(f"{{{m.name}}} {literal(ours)} (run: {literal(theirs)})")
        elif getattr(config, f.name) != getattr(saved, f.name):
            ours, theirs = getattr(config, f.name), getattr(saved, f.name)
            differences.append(f"{{{f.name}}} {literal(ours)} (run: {literal(theirs)})")
    if differences:
        raise SettingError(
            f"cannot resume {literal(path)} with different settings: {'; '.join(differences)}; "
            "leave them out to continue as the run was, or start a new run with {init_from}"
        )


def check_same_corpus(payload: dict, corpus: EncodedCorpus, vocab: Vocab, path: Path) -> None:
    """Refuse to continue a run on text other than the one it was trained on."""
    if payload.get("corpus_sha256") == corpus.sha256:
        return
    remedy = "start a new run from it with {init_from} instead"
    several = len(payload.get("corpus_files") or []) > 1 or len(corpus.files) > 1
    if several and payload.get("corpus_files"):  # which files differ says the most
        before = {path: sha for path, sha in payload["corpus_files"]}
        now = dict(corpus.files)
        changes = [f"{p} changed" for p in now if p in before and now[p] != before[p]]
        changes += [f"{p} added" for p in now if p not in before]
        changes += [f"{p} removed" for p in before if p not in now]
        if changes:
            listed = "; ".join(changes[:5]) + ("; ..." if len(changes) > 5 else "")
            raise SettingError(
                f"cannot resume {literal(path)}: the corpus is not the text the run was trained "
                f"on ({literal(listed)}); {remedy}"
            )
    ours = corpus.vocab
    if ours.chars != vocab.chars:
        new = sorted(set(ours.chars) - set(vocab.chars))
        gone = sorted(set(vocab.chars) - set(ours.chars))
        detail = f"new characters {describe_chars(new)}" if new else ""
        detail += ("; " if new and gone else "") + (
            f"missing {describe_chars(gone)}" if gone else ""
        )
        raise SettingError(
            f"cannot resume {literal(path)} on this corpus: its vocabulary differs "
            f"({literal(detail)}); {remedy}"
        )
    raise SettingError(
        f"cannot resume {literal(path)}: this corpus is not the text the run was trained on (its "
        f"SHA-256 differs); {remedy}"
    )


def check_same_labels(payload: dict, corpus: EncodedCorpus, path: Path, verb: str) -> None:
    """Refuse to go on from a model whose labels are not the corpus's."""
    saved = tuple(optional(payload, "labels", list, []))
    if saved == corpus.labels:
        return
    ours = ", ".join(corpus.labels) or "none"
    theirs = ", ".join(saved) or "none"
    raise CharnnError(
        f"cannot {verb} {path}: its labels ({theirs}) are not this corpus's ({ours}); train "
        "a new model on this corpus"
    )


def saved_settings(settings: dict[str, Any], path: Path) -> RunConfig:
    """A checkpoint's settings, or one line saying they cannot be read."""
    try:
        return RunConfig.from_dict(settings)
    except (TypeError, ValueError, AttributeError, CharnnError) as err:
        raise CharnnError(f"{path} is not a usable charnn checkpoint ({err})") from None


def saved_shape(settings: dict[str, Any], path: Path) -> ModelSpec:
    """A checkpoint's model, or one line saying it cannot be read."""
    try:
        return ModelSpec.from_dict(settings)
    except (TypeError, ValueError, AttributeError, CharnnError) as err:
        raise CharnnError(f"{path} is not a usable charnn checkpoint ({err})") from None


def merged_model(saved: ModelSpec, current: ModelConfig, given: set[str]) -> ModelConfig:
    """A saved model's settings, with those given explicitly now on top."""
    values = {f.name: getattr(saved, f.name) for f in fields(ModelConfig)}
    for name in given & set(values):
        if getattr(current, name) is not None:
            values[name] = getattr(current, name)
    if "dropout" in given and "decoder_dropout" not in given:
        values["decoder_dropout"] = None  # it follows the dropout given now
    return ModelConfig(**values)


def merged_config(saved: RunConfig, current: TrainConfig, given: set[str]) -> RunConfig:
    """A saved run's settings, with the options given explicitly now on top of them. Where the
    data and checkpoints live always comes from now; a setting left unset now is the run's."""
    values = {f.name: getattr(saved, f.name) for f in fields(TrainConfig)}
    for name in given & set(values):
        if name != "model" and getattr(current, name) is not None:
            values[name] = getattr(current, name)
    values["corpus"], values["checkpoint_dir"] = current.corpus, current.checkpoint_dir
    values["model"] = merged_model(saved.model, current.model, given)
    return RunConfig.of(TrainConfig(**values))
