"""Stage functions every recipe shares: start the run, load the model, train, register.

A recipe's `main(config)` reads as the sequence: `start_run` -> `load_model` ->
`load_data` -> `build_trainer` -> `train` -> `register`, inside `run_guard`, which
records a failure (with its traceback) or a cancel (SIGTERM, web) on the run row.
Only the main process writes rows; under `accelerate launch` it creates the run and
broadcasts its id to the other processes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import CommandError

from training import selectors, services
from training.callbacks import (
    WEB_CANCEL_REASON,
    RegistryCallback,
    StopSignal,
    is_adapter_dir,
)
from training.config import (
    ConfigError,
    TrainConfig,
    local_model_missing,
    parent_kind_problem,
)
from training.data import StageData, load_stage_data
from training.models import RunStatus, TrainingRun
from training.progress import ProgressCallback, summary_lines

CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")

RUN_MISSING = "Training run {run_id} does not exist."
MODEL_DIR_MISSING = (
    "--{flag} {path!r}: no such directory. Give a model directory or a hub id such "
    "as 'org/name'."
)
RESUME_NO_RUN = (
    "--resume: no {kind} run has output directory {path}; pass --run-id N to name "
    "the run to resume."
)
RESUME_NO_CHECKPOINT = (
    "--resume: run {run_id} has no complete checkpoint in {path} (a checkpoint-N "
    "directory with trainer_state.json); start it again without --resume."
)
RESUME_STILL_RUNNING = (
    "Run {run_id} is still running as process {pid} on this host: cancel it first."
)
RUN_FAILED = (
    "Run {run_id} failed: {error} (the traceback is on the run's page; --traceback "
    "prints it here)"
)
PARENT_NO_MODEL = "Parent run {run_id} has no checkpoint to start from."
SIGTERM_REASON = "Stopped by SIGTERM."


class RunCancelled(Exception):
    """Raised when a stop request arrives before training has started."""


@dataclass
class RunContext:
    """What the stage functions of one run share."""

    run: TrainingRun
    config: TrainConfig
    output_dir: Path
    is_main_process: bool
    resume_from: str | None = None
    stop: StopSignal = field(default_factory=StopSignal)
    write: Callable[[str], None] = print
    started: float = field(default_factory=time.monotonic)
    training: bool = False
    registry: RegistryCallback | None = None


def _main_process() -> tuple[bool, int]:
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    # `accelerate launch --cpu` says so in the environment; AcceleratorState reads
    # it, PartialState does not, and whichever is created first wins.
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    return state.is_main_process, state.num_processes


def _broadcast(value: Any, num_processes: int) -> Any:
    if num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    box = [value]
    broadcast_object_list(box, from_process=0)
    return box[0]


def _wait_for_everyone(num_processes: int) -> None:
    if num_processes > 1:
        from accelerate import PartialState

        PartialState().wait_for_everyone()


def last_checkpoint(output_dir: Path) -> tuple[str, int] | None:
    """Return (path, step) of the newest complete checkpoint-N directory."""
    if not output_dir.is_dir():
        return None
    found = []
    for child in output_dir.iterdir():
        match = CHECKPOINT_DIR.match(child.name)
        if match and (child / "trainer_state.json").exists():
            found.append((int(match.group(1)), str(child)))
    if not found:
        return None
    step, path = max(found)
    return path, step


def _pid_alive(pid: int | None) -> bool:
    if not pid or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _resolve_bf16(config: TrainConfig) -> bool:
    if config.bf16 is not None:
        return config.bf16
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def _find_run(run_id: int, kind: str) -> TrainingRun:
    run = TrainingRun.objects.filter(pk=run_id).first()
    if run is None:
        raise CommandError(RUN_MISSING.format(run_id=run_id))
    if run.kind != kind:
        raise CommandError(
            services.RUN_KIND_MISMATCH.format(
                run_id=run_id, kind=run.kind, expected=kind
            )
        )
    return run


def start_run(
    config: TrainConfig,
    *,
    kind: str,
    run_id: int | None = None,
    resume: bool = False,
    write: Callable[[str], None] = print,
    user: str = "",
) -> RunContext:
    """Create or claim the run row, resolve its output directory and checkpoint.

    `user` (a username, or "") is recorded as a new run's creator; with a snapshot
    it must be a researcher of the snapshot's project (`command_creator`). A run
    trained on a path belongs to no project, and only its creator (and superusers)
    see it.

    Under `accelerate launch` only the main process reads what it must decide on
    (which run, whether it may resume) and writes; it broadcasts the outcome, so
    every process acts on the same decision and raises the same error.
    """
    from annotation.permissions import command_creator
    from training.data import dataset_resolve

    is_main, num_processes = _main_process()
    if run_id is None and resume:
        found = _run_writing_to(config, kind) if is_main else None
        run_id = _broadcast(found, num_processes)
        if isinstance(run_id, str):
            raise CommandError(run_id)
    if run_id is None:
        try:
            config.require(
                "model" if config.parent_run is None else "parent_run", "dataset"
            )
            _check_model_paths(config)
        except ConfigError as exc:
            raise CommandError(str(exc)) from exc
        dataset_path, snapshot = dataset_resolve(config.dataset)
        try:
            created_by = command_creator(user, snapshot.project if snapshot else None)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        parent = _find_parent(config)
        created = None
        if is_main:
            created = services.run_create(
                kind=kind,
                config=config.to_dict(),
                base_model=config.model or f"run {config.parent_run}",
                dataset_snapshot=snapshot,
                dataset_path="" if snapshot else str(dataset_path),
                parent=parent,
                name=config.name,
                created_by=created_by,
            ).pk
        run_id = _broadcast(created, num_processes)
    run = _find_run(run_id, kind)
    try:
        return _claim_run(config, run, kind, resume, write, is_main, num_processes)
    except (CommandError, ConfigError) as exc:
        if is_main:
            run.refresh_from_db()
            if run.status == RunStatus.QUEUED:
                services.run_fail(run=run, error=str(exc))
        raise CommandError(str(exc)) from exc


def _check_model_paths(config: TrainConfig) -> None:
    """Every model given as a path must be a directory here (`local_model_missing`)."""
    for name in ("model", "ref_model", "reward_model"):
        value = getattr(config, name, "") or ""
        if local_model_missing(value):
            flag = name.replace("_", "-")
            raise ConfigError(MODEL_DIR_MISSING.format(flag=flag, path=value))


def _run_writing_to(config: TrainConfig, kind: str) -> int | str:
    """The newest `kind` run writing to --output-dir, or the error to raise."""
    path = Path(config.output_dir).expanduser().resolve() if config.output_dir else None
    found = (
        TrainingRun.objects.filter(kind=kind, output_dir=str(path))
        .order_by("-id")
        .first()
        if path
        else None
    )
    if found is None:
        return RESUME_NO_RUN.format(kind=kind, path=path)
    return found.pk


@dataclass(frozen=True)
class ResumePoint:
    """Where a run starts: its checkpoint and step when resuming; or why it cannot."""

    checkpoint: str | None = None
    step: int | None = None
    error: str = ""


def resume_decide(
    *,
    run: TrainingRun,
    output_dir: Path,
    resume: bool,
    host: str,
    pid_alive: Callable[[int | None], bool] = _pid_alive,
) -> ResumePoint:
    """Decide whether and from where `run` resumes; call it on the main process only.

    A run that is still `running` with a live process on this host must not be
    resumed a second time. Only the main process may read that status: once it has
    called `run_start`, the row says `running` with the main process's own pid,
    and another process reading it then would refuse while the main one waits for
    it (a hang under `accelerate launch`).
    """
    if not resume:
        return ResumePoint()
    found = last_checkpoint(output_dir)
    if found is None:
        return ResumePoint(
            error=RESUME_NO_CHECKPOINT.format(run_id=run.pk, path=output_dir)
        )
    if run.status == RunStatus.RUNNING and run.host == host and pid_alive(run.pid):
        return ResumePoint(
            error=RESUME_STILL_RUNNING.format(run_id=run.pk, pid=run.pid)
        )
    checkpoint, step = found
    return ResumePoint(checkpoint=checkpoint, step=step)


@dataclass(frozen=True)
class _Claim:
    output_dir: str
    resume: ResumePoint


def _claim_on_main(config, run, kind, resume, write) -> _Claim:
    """Decide the output directory and resume point, and mark the run running."""
    output_dir = (
        Path(
            config.output_dir
            or run.output_dir
            or settings.DATA_DIR / "runs" / str(run.pk)
        )
        .expanduser()
        .resolve()
    )
    point = resume_decide(
        run=run, output_dir=output_dir, resume=resume, host=os.uname().nodename
    )
    claim = _Claim(output_dir=str(output_dir), resume=point)
    if point.error:
        return claim
    output_dir.mkdir(parents=True, exist_ok=True)
    resolved = dataclasses.replace(
        config, output_dir=str(output_dir), bf16=_resolve_bf16(config)
    )
    try:
        services.run_start(
            run=run,
            kind=kind,
            config=resolved.to_dict(),
            output_dir=str(output_dir),
            base_model=config.model or run.base_model,
            pid=os.getpid(),
            resume_step=point.step,
        )
    except ValueError as exc:
        return dataclasses.replace(claim, resume=ResumePoint(error=str(exc)))
    write(
        f"[run {run.pk}] {kind} on "
        f"{'snapshot ' if config.dataset.isdigit() else ''}{config.dataset} from "
        f"{config.model or f'run {config.parent_run}'} -> {output_dir}"
        + (f" (resuming {point.checkpoint})" if point.checkpoint else "")
    )
    return claim


def _claim_run(config, run, kind, resume, write, is_main, num_processes) -> RunContext:
    config.require("dataset")
    if not config.model and config.parent_run is None:
        config.require("model")
    claim = _claim_on_main(config, run, kind, resume, write) if is_main else None
    claim = _broadcast(claim, num_processes)
    if claim.resume.error:
        raise CommandError(claim.resume.error)
    output_dir = Path(claim.output_dir)
    if is_main:
        run.refresh_from_db()
    ctx = RunContext(
        run=run,
        config=dataclasses.replace(
            config, output_dir=str(output_dir), bf16=_resolve_bf16(config)
        ),
        output_dir=output_dir,
        is_main_process=is_main,
        resume_from=claim.resume.checkpoint,
        write=write,
    )
    _wait_for_everyone(num_processes)
    return ctx


def _find_parent(config: TrainConfig) -> TrainingRun | None:
    if config.parent_run is None:
        return None
    parent = TrainingRun.objects.filter(pk=config.parent_run).first()
    if parent is None:
        raise CommandError(RUN_MISSING.format(run_id=config.parent_run))
    problem = parent_kind_problem(
        run_id=parent.pk, parent_kind=parent.kind, kind=config.stage
    )
    if problem:
        raise CommandError(f"--parent-run {parent.pk}: {problem}")
    return parent


def merge_adapter(adapter_dir: str, out_dir: Path, *, sequence_classification=None):
    """Merge a LoRA adapter into its base model and save the result with its
    tokenizer; return the directory. The model class follows the adapter's task
    type (a reward model's SEQ_CLS adapter merges into a sequence classifier)."""
    from peft import AutoPeftModelForCausalLM, AutoPeftModelForSequenceClassification
    from transformers import AutoTokenizer

    if sequence_classification is None:
        sequence_classification = adapter_task_type(adapter_dir) == "SEQ_CLS"
    auto = (
        AutoPeftModelForSequenceClassification
        if sequence_classification
        else AutoPeftModelForCausalLM
    )
    extra = {"num_labels": 1} if sequence_classification else {}
    model = auto.from_pretrained(adapter_dir, **extra)
    merged = model.merge_and_unload()
    out_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(adapter_dir).save_pretrained(out_dir)
    return out_dir


def adapter_task_type(adapter_dir: str | Path) -> str:
    """The PEFT task type an adapter directory was saved with ("" if unknown)."""
    import json

    config = Path(adapter_dir) / "adapter_config.json"
    return json.loads(config.read_text()).get("task_type") or ""


def starting_checkpoint(config: TrainConfig) -> tuple[str, str]:
    """(path, merged directory name) of what a run starts from: --model, else the
    final checkpoint of --parent-run. A queued run and a command resolve it here
    alike."""
    if config.model:
        return config.model, "model-merged"
    parent = TrainingRun.objects.filter(pk=config.parent_run).first()
    if parent is None:
        raise CommandError(RUN_MISSING.format(run_id=config.parent_run))
    checkpoint = selectors.run_final_checkpoint(run=parent)
    if checkpoint is None:
        raise CommandError(PARENT_NO_MODEL.format(run_id=parent.pk))
    return checkpoint.path, "parent-merged"


def resolve_model_path(ctx: RunContext) -> str:
    """The model to train: --model, else the parent run's final model.

    A LoRA adapter (a parent's final checkpoint, or --model naming one) is merged
    into its base first, into `<output dir>/parent-merged` (`model-merged`), and
    the run trains a new adapter on that model. So the starting policy is the
    parent's model and, with LoRA, the adapter-disabled reference of DPO and RL is
    that model too: the SFT model, as TRL's docs recommend. (Loading an adapter
    directory with `from_pretrained` and handing TRL a `peft_config` would train
    a fresh adapter on the bare base instead.)
    """
    source, merged_name = starting_checkpoint(ctx.config)
    path = source
    if is_adapter_dir(source):
        path = str(ctx.output_dir / merged_name)
        _, num_processes = _main_process()
        if ctx.is_main_process and not Path(path, "config.json").exists():
            merge_adapter(source, Path(path))
        _wait_for_everyone(num_processes)
    if ctx.is_main_process and ctx.run.base_model != path:
        ctx.run = services.run_base_model_set(run=ctx.run, base_model=path)
    return path


def seed(ctx: RunContext) -> None:
    """Seed Python, NumPy and torch from --seed before anything random is built.

    The Trainer seeds itself only in its own __init__, after TRL has wrapped the
    model in a new LoRA adapter (and after a reward model's new score head was
    initialised), so without this those weights would differ from run to run.
    """
    from transformers import set_seed

    set_seed(ctx.config.seed)


def load_causal_lm(ctx: RunContext):
    """Return (path, model, tokenizer) of the policy: a local path or a hub id alike."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(ctx)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=model_dtype(ctx.config))
    return path, model, tokenizer


def load_data(ctx: RunContext, stage: str) -> StageData:
    """The run's dataset (snapshot id or directory) in the columns `stage` trains on."""
    config = ctx.config
    return load_stage_data(
        config.dataset,
        stage,
        train_split=config.dataset_train_split,
        test_split=config.dataset_test_split,
    )


def peft_config(config: TrainConfig, *, task_type: str = "CAUSAL_LM"):
    """LoRA on the configured modules, or None for full fine-tuning."""
    if not config.use_peft:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.lora_target_modules),
        task_type=task_type,
        # A reward model's score head is new: train it fully.
        modules_to_save=["score"] if task_type == "SEQ_CLS" else None,
    )


def model_dtype(config: TrainConfig):
    import torch

    return torch.bfloat16 if config.bf16 else torch.float32


def logging_steps(config: TrainConfig) -> int:
    """`logging_steps`, at most `max_steps`: a run shorter than the logging interval
    (`--max-steps 3` with TRL's default of 10) would record no loss at all."""
    if config.max_steps and config.max_steps > 0:
        return max(1, min(config.logging_steps, config.max_steps))
    return config.logging_steps


def _checkpointing_keyword(args_class) -> str:
    """transformers 5 renamed `gradient_checkpointing` (the old name warns, and goes
    in v6); 4.x knows only the old one. Ours keeps TRL's name either way."""
    names = {f.name for f in dataclasses.fields(args_class)}
    return (
        "activation_checkpointing"
        if "activation_checkpointing" in names
        else "gradient_checkpointing"
    )


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def trainer_arguments(config: TrainConfig, args_class, *, has_eval: bool, **extra):
    """TRL's config for the stage, from ours (same names where TRL has them)."""
    eval_strategy = config.eval_strategy if has_eval else "no"
    return args_class(
        output_dir=config.output_dir,
        learning_rate=config.learning_rate,
        per_device_train_batch_size=config.per_device_train_batch_size,
        per_device_eval_batch_size=config.per_device_eval_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        warmup_steps=config.warmup_steps,
        lr_scheduler_type=config.lr_scheduler_type,
        logging_steps=logging_steps(config),
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        eval_strategy=eval_strategy,
        eval_steps=(config.eval_steps or config.save_steps)
        if eval_strategy == "steps"
        else None,
        **{_checkpointing_keyword(args_class): config.gradient_checkpointing},
        # Pinned host memory only helps copies to a GPU (torch warns without one).
        dataloader_pin_memory=_has_cuda(),
        bf16=bool(config.bf16),
        seed=config.seed,
        report_to="none",
        disable_tqdm=True,
        **extra,
    )


def attach_callbacks(trainer, ctx: RunContext, *, base_model: str) -> RegistryCallback:
    """Replace the printer with our progress lines and add the registry callback."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    registry = RegistryCallback(
        run_id=ctx.run.pk,
        base_model=base_model,
        is_main_process=ctx.is_main_process,
        stop=ctx.stop,
    )
    trainer.add_callback(registry)
    trainer.add_callback(ProgressCallback(run_id=ctx.run.pk, write=ctx.write))
    ctx.registry = registry
    return registry


@contextlib.contextmanager
def run_guard(ctx: RunContext) -> Iterator[RunContext]:
    """Record how the run ends: failed with its traceback, or cancelled.

    SIGTERM during training asks the trainer to stop after the current step (and
    save a checkpoint); before training it cancels at once.
    """

    def on_sigterm(signum, frame):
        ctx.stop.request(SIGTERM_REASON)
        if not ctx.training:
            raise RunCancelled(SIGTERM_REASON)

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield ctx
    except (RunCancelled, KeyboardInterrupt) as exc:
        if ctx.is_main_process:
            _flush_metrics(ctx)
            reason = _cancel_reason(ctx, str(exc) or "Interrupted.")
            services.run_cancel(run=ctx.run, reason=reason)
            _print_summary(ctx, RunStatus.CANCELLED, error=reason)
        raise CommandError(f"Run {ctx.run.pk} cancelled: {exc}") from exc
    except Exception as exc:
        if ctx.is_main_process:
            _flush_metrics(ctx)
            error = "".join(traceback.format_exception(exc))
            services.run_fail(run=ctx.run, error=error)
            _print_summary(ctx, RunStatus.FAILED, error=f"{type(exc).__name__}: {exc}")
        if isinstance(exc, CommandError):
            raise
        # A library's refusal (peft, TRL, the hub client) reads as the command's
        # error; the run row keeps the traceback, and --traceback prints it.
        raise CommandError(
            RUN_FAILED.format(run_id=ctx.run.pk, error=f"{type(exc).__name__}: {exc}")
        ) from exc
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _cancel_reason(ctx: RunContext, reason: str) -> str:
    """The reason recorded for a stop. The worker stops a run cancelled from the
    web with SIGTERM, which can arrive before the trainer's callback has seen the
    flag: then the researcher's cancel, not the signal, is the reason."""
    if reason != SIGTERM_REASON:
        return reason
    if TrainingRun.objects.filter(pk=ctx.run.pk, cancel_requested=True).exists():
        return WEB_CANCEL_REASON
    return reason


def _flush_metrics(ctx: RunContext) -> None:
    """Keep what was logged before a failure; never mask the failure itself."""
    if ctx.registry is not None:
        with contextlib.suppress(Exception):
            ctx.registry.flush()


def train(trainer, ctx: RunContext) -> None:
    """Run the trainer (from the checkpoint when resuming)."""
    ctx.training = True
    try:
        trainer.train(resume_from_checkpoint=ctx.resume_from)
    finally:
        ctx.training = False


def register(trainer, ctx: RunContext, registry: RegistryCallback, *, base_model: str):
    """Save the final model, register it, and close the run (succeeded or cancelled)."""
    step = trainer.state.global_step
    summary: dict[str, Any] = {"global_step": step, **registry.train_summary}
    if ctx.stop.reason is None:
        trainer.save_model(str(ctx.output_dir))
    if ctx.is_main_process:
        registry.flush()
        if ctx.stop.reason is None:
            services.checkpoint_register(
                run=ctx.run,
                path=str(ctx.output_dir),
                step=step,
                is_adapter=is_adapter_dir(ctx.output_dir),
                base_model=base_model,
                eval_metrics=registry.last_eval,
            )
        paths = [c.path for c in selectors.checkpoint_list(run=ctx.run)]
        summary["checkpoints"] = paths
        if ctx.stop.reason is None:
            ctx.run = services.run_finish(run=ctx.run, summary=summary)
            _print_summary(ctx, RunStatus.SUCCEEDED)
        else:
            reason = _cancel_reason(ctx, ctx.stop.reason)
            ctx.run = services.run_cancel(run=ctx.run, reason=reason, summary=summary)
            _print_summary(ctx, RunStatus.CANCELLED, error=reason)
    return ctx.run


def _print_summary(ctx: RunContext, status: str, *, error: str = "") -> None:
    run = TrainingRun.objects.get(pk=ctx.run.pk)
    steps = run.metrics.order_by("-step").values_list("step", flat=True).first() or 0
    steps = run.summary.get("global_step", steps)
    for line in summary_lines(
        run_id=run.pk,
        status=status,
        steps=steps,
        seconds=time.monotonic() - ctx.started,
        checkpoints=[c.path for c in selectors.checkpoint_list(run=run)],
        output_dir=str(ctx.output_dir),
        error=error,
    ):
        ctx.write(line)
    sys.stdout.flush()
