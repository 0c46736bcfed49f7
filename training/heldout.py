"""Held-out preference accuracy of the policy during online RL (RLOO, GRPO).

RLOO and GRPO log the reward model's scores of the policy's own samples, which is
exactly what rises when the policy learns to exploit the reward model. What people
preferred is in the preference snapshot's held-out (test) split, and this
TrainerCallback measures the policy against it: every `heldout_steps` steps, on a
fixed subset of at most `heldout_pairs` held-out pairs, the policy's implicit reward
of an answer y to a prompt x,

    r(x, y) = log pi(y | x) - log pi_ref(y | x),   summed over the tokens of y,

and the share of pairs with r(x, chosen) > r(x, rejected) (ties count half; at the
start pi = pi_ref and every pair is a tie, 0.5). It is logged as the eval metrics
`eval_heldout_accuracy` and `eval_heldout_margin` (mean r(chosen) - r(rejected),
nats), which the run registry records and `pitfalls.detect_reward_hacking` reads
next to `reward`: a reward that keeps rising while this accuracy falls is reward
hacking.

Summed, not length-normalised: under the KL-regularised objective RLOO and GRPO
optimise, the optimal policy satisfies beta * log(pi / pi_ref)(y | x) = r(x, y) -
beta * log Z(x) for the whole answer (Rafailov et al. 2023, eq. 5), so the summed
log-ratio is the reward the policy implicitly assigns, and log Z(x) cancels between
two answers to one prompt. It is DPO's `rewards/accuracies` measured on held-out
pairs. The length bias of raw log-probabilities (long answers score lower) mostly
cancels in the ratio to the reference, and a per-token mean would rank answers by
something the objective does not optimise. Log-probabilities use the sampling
temperature, as TRL's KL term does.

The reference is the trainer's own (with LoRA the adapter-disabled base; with full
fine-tuning TRL's frozen copy when beta > 0); without one, the policy at step 0 is
the reference. Its log-probabilities are computed once and cached.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from transformers import TrainerCallback

ACCURACY_METRIC = "eval_heldout_accuracy"
MARGIN_METRIC = "eval_heldout_margin"


@dataclass(frozen=True)
class TokenizedPairs:
    """Token ids of each pair's prompt + chosen and prompt + rejected answers.

    `sequences` interleaves them (chosen of pair i at 2i, rejected at 2i+1);
    `completion_starts[k]` is where the answer's tokens begin in sequence k.
    """

    sequences: list[list[int]]
    completion_starts: list[int]

    @property
    def num_pairs(self) -> int:
        return len(self.sequences) // 2


def tokenize_pairs(rows: list[dict], tokenizer, *, max_length: int | None):
    """Render each pair as the DPO trainer does (chat template when conversational)
    and tokenize prompt and answer separately, so both answers share the prompt."""
    from trl.data_utils import maybe_apply_chat_template, maybe_extract_prompt

    sequences, starts = [], []
    for row in rows:
        pair = maybe_extract_prompt(
            {key: row[key] for key in ("prompt", "chosen", "rejected") if key in row}
        )
        texts = maybe_apply_chat_template(pair, tokenizer)
        prompt = tokenizer(texts["prompt"], add_special_tokens=False)["input_ids"]
        for answer in (texts["chosen"], texts["rejected"]):
            ids = prompt + tokenizer(answer, add_special_tokens=False)["input_ids"]
            if max_length is not None:
                ids = ids[:max_length]
            sequences.append(ids)
            starts.append(min(len(prompt), len(ids)))
    return TokenizedPairs(sequences=sequences, completion_starts=starts)


def answer_logps(
    model, pairs: TokenizedPairs, *, pad_token_id: int, batch_size: int, device,
    temperature: float = 1.0,
):  # fmt: skip
    """Summed log-probability of each answer given its prompt, one per sequence."""
    import torch
    from trl.trainer.utils import selective_log_softmax

    totals = []
    for start in range(0, len(pairs.sequences), batch_size):
        chunk = pairs.sequences[start : start + batch_size]
        begins = pairs.completion_starts[start : start + batch_size]
        width = max(len(ids) for ids in chunk)
        input_ids = torch.full((len(chunk), width), pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(chunk), width), dtype=torch.long)
        answer = torch.zeros((len(chunk), width), dtype=torch.bool)
        for row, (ids, begin) in enumerate(zip(chunk, begins, strict=True)):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention[row, : len(ids)] = 1
            answer[row, begin : len(ids)] = True
        input_ids, attention, answer = (
            t.to(device) for t in (input_ids, attention, answer)
        )
        logits = model(
            input_ids=input_ids, attention_mask=attention, use_cache=False
        ).logits[:, :-1]
        token_logps = selective_log_softmax(
            logits.float() / temperature, input_ids[:, 1:]
        )
        totals.append((token_logps * answer[:, 1:]).sum(-1).double().cpu())
    return torch.cat(totals)


def implicit_preference(policy_logps, reference_logps) -> dict[str, float]:
    """Accuracy (ties half) and mean margin of the implicit rewards of the pairs.

    Both inputs interleave chosen (even positions) and rejected (odd) answers.
    """
    rewards = policy_logps - reference_logps
    margins = rewards[0::2] - rewards[1::2]
    wins = (margins > 0).double() + 0.5 * (margins == 0).double()
    return {
        ACCURACY_METRIC: float(wins.mean()),
        MARGIN_METRIC: float(margins.mean()),
    }


def reference_context(trainer) -> tuple[Any, contextlib.AbstractContextManager] | None:
    """The model and context that give the trainer's reference policy, if any."""
    from accelerate.utils import is_peft_model

    if getattr(trainer, "ref_model", None) is not None:
        return trainer.ref_model, contextlib.nullcontext()
    unwrapped = trainer.accelerator.unwrap_model(trainer.model)
    if is_peft_model(unwrapped):
        from trl.trainer.utils import use_adapter

        name = "ref" if "ref" in unwrapped.peft_config else None
        return trainer.model, use_adapter(unwrapped, adapter_name=name)
    return None


class HeldoutPreferenceCallback(TrainerCallback):
    """Measure and log the policy's implicit preference accuracy on held-out pairs."""

    def __init__(
        self,
        *,
        trainer,
        pairs: TokenizedPairs,
        every: int,
        temperature: float = 1.0,
        batch_size: int = 8,
        write: Callable[[str], None] | None = None,
    ) -> None:
        self.trainer = trainer
        self.pairs = pairs
        self.every = every
        self.temperature = temperature
        self.batch_size = batch_size
        self.write = write
        self.reference_logps = None
        self.enabled = pairs.num_pairs > 0

    def _logps(self, model):
        import torch

        tokenizer = self.trainer.processing_class
        tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
        # Padding is masked out; any id will do when the tokenizer has none.
        pad = tokenizer.pad_token_id
        pad = pad if pad is not None else (tokenizer.eos_token_id or 0)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), self.trainer.accelerator.autocast():
                return answer_logps(
                    model,
                    self.pairs,
                    pad_token_id=pad,
                    batch_size=self.batch_size,
                    device=self.trainer.accelerator.device,
                    temperature=self.temperature,
                )
        finally:
            model.train(was_training)

    def on_train_begin(self, args, state, control, **kwargs):
        if not self.enabled:
            return
        found = reference_context(self.trainer)
        if found is None and state.global_step > 0:
            self.enabled = False
            if self.write and state.is_world_process_zero:
                self.write(
                    "held-out accuracy off: a resumed full fine-tune with beta=0 "
                    "has no reference policy to compare with"
                )
            return
        model, context = found or (self.trainer.model, contextlib.nullcontext())
        with context:
            self.reference_logps = self._logps(model)

    def on_step_end(self, args, state, control, **kwargs):
        if not self.enabled or self.reference_logps is None:
            return
        if state.global_step % self.every and state.global_step != state.max_steps:
            return
        values = implicit_preference(
            self._logps(self.trainer.model), self.reference_logps
        )
        # As Trainer.log does, minus the trainer's own metric averaging (RLOO's
        # log() would fold its pending train metrics into these). The handler's
        # on_log clears should_log, which would drop this step's train log.
        state.log_history.append({**values, "step": state.global_step})
        should_log = control.should_log
        self.trainer.callback_handler.on_log(args, state, control, values)
        control.should_log = should_log
