"""The baseline of bench/training_overhead.py: the same DPO job as
`manage.py train_dpo`, written as a bare TRL script (no Prefline, no database).

Prints one JSON line: the trainer's own train_runtime, the tokens it processed, and
the process wall time.
"""

import argparse
import json
import time

STARTED = time.monotonic()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--max-steps", type=int, required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--logging-steps", type=int, required=True)
    args = parser.parse_args()

    from datasets import load_from_disk
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model)
    dataset = load_from_disk(args.dataset)
    training_args = DPOConfig(
        output_dir=args.output_dir,
        learning_rate=5e-6,
        per_device_train_batch_size=args.batch_size,
        max_steps=args.max_steps,
        logging_steps=args.logging_steps,
        save_steps=args.max_steps,
        gradient_checkpointing=False,
        bf16=False,
        seed=42,
        report_to="none",
        beta=0.1,
        loss_type=["sigmoid"],
    )
    peft_config = LoraConfig(
        r=16,
        lora_alpha=32,
        lora_dropout=0.05,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        task_type="CAUSAL_LM",
    )
    trainer = DPOTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset["train"],
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    result = trainer.train()
    trainer.save_model(args.output_dir)
    tokens = max(e.get("num_tokens", 0) for e in trainer.state.log_history)
    print(
        json.dumps(
            {
                "train_runtime": result.metrics["train_runtime"],
                "num_tokens": tokens,
                "global_step": trainer.state.global_step,
                "wall_seconds": time.monotonic() - STARTED,
            }
        )
    )


if __name__ == "__main__":
    main()
