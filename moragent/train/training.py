"""``finetune``: train role adapters on trajectories, the API behind ``moragent finetune``.

>>> from moragent.train import finetune
>>> result = finetune("runs/train.jsonl", method="mor", out="runs/adapters", max_steps=200)
>>> result.loss_after["executor"], result.out

Every input is checked before anything is written (data, base model). Training runs in a
work folder next to ``out`` (``.<name>.training``, holding the checkpoints that
``resume=True`` continues from); the finished adapters replace ``out`` by a rename at the
end, so a crash never leaves a half-written adapter where a good one was.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from moragent.prompts import DEFAULT_PROMPTS
from moragent.train.base import load_base, resolve_base
from moragent.train.dataset import load_training_data, split
from moragent.train.metadata import AdapterMetadata, write_metadata
from moragent.train.tensors import EncodedDataset, EncodeStats, RoleCollator, encode_all

logger = logging.getLogger(__name__)

DEFAULT_OUT = Path("runs/adapters")


@dataclass
class TrainConfig:
    """Training settings; the defaults suit a ~135M model on a CPU (see the README).

    Attributes:
        epochs: passes over the training split (ignored when ``max_steps`` > 0).
        max_steps: optimizer steps to run; ``-1`` runs ``epochs`` instead.
        lr: peak learning rate (linear decay after ``warmup_ratio`` of the steps).
        batch_size: sequences per device per forward.
        grad_accum: forwards per optimizer step.
        max_length: longest sequence in tokens; longer ones are cut at a segment boundary.
        val_split: share of the trajectories held out for validation (at most ``max_val``).
        max_val: most trajectories in the validation split.
        seed: seed of the split, the data order, dropout and adapter initialisation.
        bf16: bf16 autocast; ``None`` uses it where the hardware supports it.
        save_steps: a checkpoint every this many steps (for ``resume``).
        logging_steps: a training log every this many steps.
        eval_steps: a validation every this many steps (``None``: before and after only).
        warmup_ratio: share of the steps spent warming the learning rate up.
        weight_decay: AdamW weight decay.
    """

    epochs: float = 1.0
    max_steps: int = -1
    lr: float = 2e-4
    batch_size: int = 4
    grad_accum: int = 2
    max_length: int = 1024
    val_split: float = 0.05
    max_val: int = 64
    seed: int = 0
    bf16: bool | None = None
    save_steps: int = 50
    logging_steps: int = 5
    eval_steps: int | None = None
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0


@dataclass
class FinetuneResult:
    """What one training run did and where the adapters went."""

    out: Path
    method: str
    base: dict[str, str]
    steps: int
    epochs: float
    tokens: int
    runtime_s: float
    tokens_per_second: float
    train_loss: float | None
    loss_before: dict[str, float]
    loss_after: dict[str, float]
    encode: EncodeStats
    val_sequences: int
    trainable_parameters: int
    total_parameters: int
    converted_from: str | None = None
    resumed_from: str | None = None
    processes: int = 1
    main_process: bool = True
    log_history: list[dict[str, Any]] = field(default_factory=list)


def work_dir(out: str | Path) -> Path:
    """The folder where a run for ``out`` trains and keeps its checkpoints."""
    out = Path(out)
    return out.parent / f".{out.name}.training"


def finetune(
    data: str | Path,
    base: str | Path | None = None,
    method: str = "mor",
    out: str | Path = DEFAULT_OUT,
    config: TrainConfig | None = None,
    resume: bool = False,
    adapter_options: dict[str, Any] | None = None,
    callbacks: list[Any] | None = None,
    init_from: str | Path | None = None,
    **settings: Any,
) -> FinetuneResult:
    """Train role adapters (``mor`` or ``lora``) on a trajectories file.

    Args:
        data: trajectories (JSON Lines), or an OpenAI-messages file (converted on the way in).
        base: GGUF file or transformers folder; ``None`` for the embedded SmolLM2-135M.
        method: ``"mor"`` (routed experts per role) or ``"lora"`` (one LoRA per role).
        out: folder for the adapter files and ``moragent.json``; replaced atomically.
        config: training settings; keyword ``settings`` override single fields of it.
        resume: continue from the last checkpoint of an interrupted run for ``out``
            (a ``ValueError`` when there is none).
        adapter_options: extra ``MoRConfig`` fields (rank, experts, ...).
        callbacks: ``transformers.TrainerCallback`` objects (progress display).
        init_from: a folder of trained adapters (``out`` of an earlier run) to start
            from instead of a fresh initialisation: its method and adapter
            configuration are kept, and it must fit ``base`` and the templates in use.
            The learning-rate schedule starts anew (unlike ``resume``).

    Returns:
        The run's figures: steps, tokens, tokens per second, validation loss per role
        before and after, and the output folder.

    Raises:
        DataError: the data file is empty, malformed or calls unknown tools.
        ModelNotFoundError: the base model does not exist.
        ValueError: a setting is out of range, or ``init_from`` does not fit.
    """
    import torch
    from peft import PeftModel, get_peft_model
    from transformers import PrinterCallback, TrainingArguments
    from transformers.trainer_utils import get_last_checkpoint

    from moragent.mor import MoRConfig
    from moragent.train.trainer import LogCallback, MoRTrainer

    config = _settings(config, settings)
    if method not in ("mor", "lora"):
        raise ValueError(f"unknown method {method!r}: use 'mor' or 'lora'")
    out = Path(out)

    # 1. check every input before anything is written
    base_model = resolve_base(base)
    training_data = load_training_data(data, seed=config.seed)
    if init_from is not None:
        init_from = Path(init_from)
        mor_config = _start_config(init_from, base_model.path, method, adapter_options)
    else:
        mor_config = MoRConfig(
            method=method, template_version=DEFAULT_PROMPTS.version, **(adapter_options or {})
        )
    work = work_dir(out)
    checkpoints = work / "checkpoints"
    last = get_last_checkpoint(str(checkpoints)) if resume and checkpoints.is_dir() else None
    if resume and last is None:
        raise ValueError(
            f"nothing to resume for {out}: no checkpoint in {work} (is --out the same as "
            "the interrupted run's?); leave out --resume to start a new run"
        )
    train_set, val_set = split(training_data.trajectories, config.val_split, config.seed)
    val_set = val_set[: config.max_val]

    # 2. model, tokenizer, tensors
    torch.manual_seed(config.seed)
    model, tokenizer = load_base(base_model)
    roles = list(mor_config.roles)
    train_items, stats = encode_all(train_set, tokenizer, config.max_length, roles=roles)
    val_items, _ = encode_all(val_set, tokenizer, config.max_length, roles=roles)
    if not train_items:
        raise ValueError(
            f"no training sequence fits max_length={config.max_length} tokens: raise --max-length"
        )
    if init_from is not None:
        model = PeftModel.from_pretrained(model, init_from, is_trainable=True)
        logger.info("starting from the adapters in %s", init_from)
    else:
        model = get_peft_model(model, mor_config)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    logger.info(
        "trainable parameters: %d of %d (%.2f%%)", trainable, total, 100 * trainable / total
    )

    # 3. the work folder: fresh, or kept for resume (checked in 1.)
    bf16 = _use_bf16(config.bf16)
    args = TrainingArguments(
        output_dir=str(checkpoints),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        learning_rate=config.lr,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        lr_scheduler_type="linear",
        seed=config.seed,
        data_seed=config.seed,
        bf16=bf16,
        use_cpu=_cpu_only(),
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=2,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        eval_strategy="steps" if config.eval_steps and val_items else "no",
        eval_steps=config.eval_steps,
        remove_unused_columns=False,
        label_names=["labels"],
        include_num_input_tokens_seen="non_padding",
        ddp_find_unused_parameters=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        disable_tqdm=True,
        report_to="none",
    )
    with args.main_process_first(local=False, desc="preparing the work folder"):
        if args.process_index == 0:
            _recover(out)
            if last is None and work.exists():
                logger.info("removing the leftovers of an earlier run in %s", work)
                shutil.rmtree(work)
            checkpoints.mkdir(parents=True, exist_ok=True)

    trainer = MoRTrainer(
        model=model,
        args=args,
        train_dataset=EncodedDataset(train_items),
        eval_dataset=EncodedDataset(val_items) if val_items else None,
        data_collator=RoleCollator(tokenizer.pad_token_id),
        callbacks=callbacks,
        roles=roles,
    )
    trainer.remove_callback(PrinterCallback)  # the library logs; only the CLI prints
    trainer.add_callback(LogCallback())

    # 4. train, with the validation loss per role before and after
    loss_before = _role_losses(trainer, bool(val_items))
    started = time.perf_counter()
    train_output = trainer.train(resume_from_checkpoint=last)
    runtime = time.perf_counter() - started
    loss_after = _role_losses(trainer, bool(val_items))
    tokens = int(trainer.state.num_input_tokens_seen)
    session_tokens = tokens - int(getattr(trainer, "_initial_num_input_tokens_seen", 0) or 0)

    result = FinetuneResult(
        out=out,
        method=method,
        base=base_model.to_dict(),
        steps=int(trainer.state.global_step),
        epochs=float(trainer.state.epoch or 0.0),
        tokens=tokens,
        runtime_s=runtime,
        tokens_per_second=session_tokens / runtime if runtime > 0 else 0.0,
        train_loss=float(train_output.training_loss) if train_output else None,
        loss_before=loss_before,
        loss_after=loss_after,
        encode=stats,
        val_sequences=len(val_items),
        trainable_parameters=trainable,
        total_parameters=total,
        converted_from=training_data.converted_from,
        resumed_from=last,
        processes=int(args.world_size),
        main_process=bool(args.should_save),
        log_history=list(trainer.state.log_history),
    )

    # 5. the adapters and their metadata, renamed into place in one step
    final = work / "adapter"
    trainer.save_model(str(final))  # on every process: FSDP and DeepSpeed gather here
    if args.should_save:
        metadata = AdapterMetadata(
            method=method,
            roles=roles,
            template_version=DEFAULT_PROMPTS.version,
            base=base_model.to_dict(),
            data={
                "path": str(training_data.path),
                "sha256": training_data.sha256,
                "trajectories": len(training_data.trajectories),
                "converted_from": training_data.converted_from,
            },
            started_from=_started_from(init_from),
            adapter_config=_jsonable(mor_config.to_dict()),
            training=_jsonable(asdict(config)),
            results=_summary(result),
        )
        write_metadata(final, metadata)
        _replace(final, out)
        shutil.rmtree(work, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    logger.info("adapters written to %s", out)
    return result


def _settings(config: TrainConfig | None, settings: dict[str, Any]) -> TrainConfig:
    config = TrainConfig(**asdict(config)) if config is not None else TrainConfig()
    for key, value in settings.items():
        if not hasattr(config, key):
            known = ", ".join(TrainConfig.__dataclass_fields__)
            raise TypeError(f"unknown training setting {key!r}; the settings are: {known}")
        setattr(config, key, value)
    for key in ("batch_size", "grad_accum", "max_length", "save_steps", "logging_steps"):
        if getattr(config, key) < 1:
            raise ValueError(f"{key} must be at least 1, got {getattr(config, key)}")
    if not config.lr > 0:
        raise ValueError(f"lr must be positive, got {config.lr}")
    if config.max_steps <= 0 and config.epochs <= 0:
        raise ValueError("give a positive max_steps or epochs: there is nothing to train")
    return config


def _start_config(
    folder: Path, base_path: Path, method: str, adapter_options: dict[str, Any] | None
) -> Any:
    """The adapter configuration of ``folder``, checked to fit this run (``init_from``)."""
    from moragent.mor import MoRConfig
    from moragent.train.metadata import check_adapters

    if not (folder / "adapter_config.json").is_file():
        raise ValueError(
            f"no adapters to start from in {folder}: pass the --out folder of a finetune run"
        )
    metadata = check_adapters(folder, base_path, DEFAULT_PROMPTS.version)
    if metadata.method != method:
        raise ValueError(
            f"the adapters in {folder} are method {metadata.method!r}, not {method!r}: "
            f"pass --method {metadata.method} to continue them"
        )
    if adapter_options:
        given = ", ".join(sorted(adapter_options))
        raise ValueError(
            f"the adapter settings ({given}) come from the adapters in {folder} when "
            "starting from them: leave out --rank and --alpha"
        )
    return MoRConfig.from_pretrained(str(folder))


def _started_from(folder: Path | None) -> dict[str, Any] | None:
    """Where a run's adapters started: the folder and the data its adapters were trained on."""
    if folder is None:
        return None
    from moragent.train.metadata import read_metadata

    earlier = read_metadata(folder)
    return {"path": str(folder), "data": earlier.data, "training": earlier.training}


def _use_bf16(wanted: bool | None) -> bool:
    """bf16 autocast where the hardware has it (CUDA with bf16, or a CPU with AVX512-BF16/AMX)."""
    import torch

    if wanted is not None:
        return wanted
    if torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:
        return False


def _cpu_only() -> bool:
    """No accelerator here: the Trainer then runs on CPU, with gloo DDP under a launcher."""
    import torch

    return not (torch.cuda.is_available() or torch.backends.mps.is_available())


def _role_losses(trainer: Any, has_val: bool) -> dict[str, float]:
    if not has_val:
        return {}
    metrics = trainer.role_losses()
    losses = {"all": metrics["eval_loss"]}
    losses.update({role: metrics[f"eval_loss_{role}"] for role in trainer.roles})
    return losses


def _summary(result: FinetuneResult) -> dict[str, Any]:
    return {
        "steps": result.steps,
        "epochs": result.epochs,
        "tokens": result.tokens,
        "tokens_per_second": round(result.tokens_per_second, 2),
        "train_loss": result.train_loss,
        "val_loss_before": result.loss_before,
        "val_loss_after": result.loss_after,
        "val_sequences": result.val_sequences,
        "processes": result.processes,
        "cut_sequences": result.encode.cut,
        "dropped_sequences": result.encode.dropped,
    }


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _recover(out: Path) -> None:
    """Put back adapters a crash left set aside in the instant of ``_replace``."""
    old = out.parent / f".{out.name}.old"
    if old.is_dir() and not out.exists():
        logger.warning("restoring the adapters that an interrupted run set aside in %s", old)
        old.rename(out)


def _replace(staged: Path, out: Path) -> None:
    """Move ``staged`` to ``out``; an existing ``out`` is kept until the new one is in place."""
    out.parent.mkdir(parents=True, exist_ok=True)
    old = out.parent / f".{out.name}.old"
    if old.exists():
        shutil.rmtree(old)
    if out.exists():
        out.rename(old)
    staged.rename(out)
    shutil.rmtree(old, ignore_errors=True)


__all__ = ["DEFAULT_OUT", "FinetuneResult", "TrainConfig", "finetune", "work_dir"]
