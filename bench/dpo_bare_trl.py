"""The baseline of bench/training_overhead.py: the same DPO job as
`manage.py train_dpo`, written as a bare TRL script (no Prefline, no database).

As a script it prints one JSON line: the trainer's own train_runtime, the tokens it
processed, and the process wall time. As a module, `train_bare_dpo` returns the
trainer's `log_history` too (tests/training/test_callbacks.py compares it with what
Prefline records and prints for the same job).

The settings are those `manage.py train_dpo` resolves by default (TRL's DPOConfig
names): LoRA r=16, alpha=32, dropout 0.05 on q/k/v/o, sigmoid loss, beta 0.1,
learning rate 5e-6, seed 42, tqdm off (Prefline prints its own progress lines; TRL
then prints each log dict). Like Prefline, it seeds before it loads anything, so
that the LoRA initialisation is the same on both sides.
"""

from __future__ import annotations

import argparse
import json
import time

STARTED = time.monotonic()


def train_bare_dpo(
    *,
    model: str,
    dataset: str,
    output_dir: str,
    max_steps: int,
    batch_size: int,
    logging_steps: int,
    learning_rate: float = 5e-6,
    beta: float = 0.1,
    seed: int = 42,
    bf16: bool = False,
    gradient_checkpointing: bool = False,
    max_length: int = 1024,
) -> tuple[dict, list[dict]]:
    """Train DPO with TRL alone; return (summary, trainer.state.log_history)."""
    import torch
    from datasets import load_from_disk
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import DPOConfig, DPOTrainer

    set_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(model)
    policy = AutoModelForCausalLM.from_pretrained(
        model, dtype=torch.bfloat16 if bf16 else torch.float32
    )
    train_dataset = load_from_disk(dataset)["train"]
    training_args = DPOConfig(
        output_dir=output_dir,
        learning_rate=learning_rate,
        per_device_train_batch_size=batch_size,
        max_steps=max_steps,
        logging_steps=logging_steps,
        save_steps=max_steps,
        gradient_checkpointing=gradient_checkpointing,
        bf16=bf16,
        seed=seed,
        report_to="none",
        disable_tqdm=True,
        beta=beta,
        loss_type=["sigmoid"],
        max_length=max_length,
    )
    peft_config = LoraConfig(
        r=16,
        lora_alpha=32,
        lora_dropout=0.05,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        task_type="CAUSAL_LM",
    )
    trainer = DPOTrainer(
        model=policy,
        args=training_args,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    result = trainer.train()
    trainer.save_model(output_dir)
    history = trainer.state.log_history
    summary = {
        "train_runtime": result.metrics["train_runtime"],
        "num_tokens": max(e.get("num_tokens", 0) for e in history),
        "global_step": trainer.state.global_step,
    }
    return summary, history


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--max-steps", type=int, required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--logging-steps", type=int, required=True)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--max-length", type=int, default=1024)
    args = parser.parse_args()
    summary, _ = train_bare_dpo(
        model=args.model,
        dataset=args.dataset,
        output_dir=args.output_dir,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        logging_steps=args.logging_steps,
        bf16=args.bf16,
        gradient_checkpointing=args.gradient_checkpointing,
        max_length=args.max_length,
    )
    print(json.dumps({**summary, "wall_seconds": time.monotonic() - STARTED}))


if __name__ == "__main__":
    main()
