"""The held-out preference accuracy of RL runs: measured during a real RLOO run,
recorded, and read by the reward-hacking detector."""

import numpy as np
import pytest
from django.core.management import call_command

from training import pitfalls, selectors, services
from training.heldout import (
    ACCURACY_METRIC,
    MARGIN_METRIC,
    implicit_preference,
)
from training.models import RunStatus, TrainingRun

# The callback batches and pads; the reference below scores one unpadded sequence at
# a time. Summed float32 log-probabilities of ~20 tokens agree to about this.
MARGIN_ATOL = 1e-3


def test_implicit_preference_counts_wins_by_log_ratio_and_ties_as_half():
    import torch

    # chosen/rejected interleaved: pairs (a) win, (b) lose, (c) tie
    policy = torch.tensor([-10.0, -12.0, -9.0, -8.0, -5.0, -5.0], dtype=torch.float64)
    reference = torch.tensor([-11.0, -11.0, -9.0, -9.0, -6.0, -6.0])
    values = implicit_preference(policy, reference.double())
    assert values[ACCURACY_METRIC] == pytest.approx(0.5)
    assert values[MARGIN_METRIC] == pytest.approx((2.0 - 1.0 + 0.0) / 3)


def test_implicit_preference_is_relative_to_the_reference():
    import torch

    # The policy gives the chosen answer the lower log-probability, but raised it
    # more than the rejected one relative to the reference: a win.
    policy = torch.tensor([-20.0, -10.0], dtype=torch.float64)
    reference = torch.tensor([-25.0, -10.5], dtype=torch.float64)
    assert implicit_preference(policy, reference)[ACCURACY_METRIC] == 1.0


def hacking_series():
    steps = np.arange(10, 610, 10, dtype=float)
    reward = np.linspace(0.0, 3.0, steps.size) + np.random.default_rng(0).normal(
        0, 0.1, steps.size
    )
    eval_steps = np.array([100, 200, 300, 400, 500, 600], dtype=float)
    accuracy = np.array([0.55, 0.62, 0.66, 0.60, 0.55, 0.50])
    return {"reward": (steps, reward), ACCURACY_METRIC: (eval_steps, accuracy)}


def test_rl_reward_rising_while_heldout_accuracy_falls_is_reward_hacking():
    findings = pitfalls.analyze_run(hacking_series(), kind="rl")
    assert [f.code for f in findings] == ["reward_hacking"]
    assert findings[0].metrics == ("reward", ACCURACY_METRIC)
    assert (findings[0].step_start, findings[0].step_end) == (300, 600)


def test_rl_heldout_accuracy_rising_with_the_reward_is_quiet():
    series = hacking_series()
    eval_steps, _ = series[ACCURACY_METRIC]
    series[ACCURACY_METRIC] = (eval_steps, np.linspace(0.5, 0.7, eval_steps.size))
    assert pitfalls.analyze_run(series, kind="rl") == []


def test_recorded_heldout_rows_reach_the_detector(db):
    run = services.run_create(kind="rl", config={}, base_model="m")
    series = hacking_series()
    steps, reward = series["reward"]
    rows = [
        {"step": int(s), "values": {"reward": float(r)}}
        for s, r in zip(steps, reward, strict=True)
    ]
    eval_steps, accuracy = series[ACCURACY_METRIC]
    rows += [
        {
            "step": int(s),
            "split": "eval",
            "values": {ACCURACY_METRIC: float(a), MARGIN_METRIC: 0.1},
        }
        for s, a in zip(eval_steps, accuracy, strict=True)
    ]
    services.metric_record_many(run=run, rows=rows)
    assert [f.code for f in selectors.run_warnings(run=run)] == ["reward_hacking"]


def reference_accuracy(policy, reference, tokenizer, rows):
    """Score each answer alone (no batching, no padding), full log-softmax."""
    import torch

    margins = []
    for row in rows:
        prompt = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
        rewards = []
        for answer in (row["chosen"], row["rejected"]):
            ids = prompt + tokenizer(answer, add_special_tokens=False)["input_ids"]
            inputs = torch.tensor([ids])
            total = 0.0
            for model in (policy, reference):
                with torch.no_grad():
                    logits = model(input_ids=inputs).logits[0, :-1]
                logps = torch.log_softmax(logits.double(), dim=-1)
                picked = logps[torch.arange(len(ids) - 1), inputs[0, 1:]]
                score = float(picked[len(prompt) - 1 :].sum())
                total += score if model is policy else -score
            rewards.append(total)
        margins.append(rewards[0] - rewards[1])
    margins = np.array(margins)
    accuracy = np.mean((margins > 0) + 0.5 * (margins == 0))
    return accuracy, margins.mean()


@pytest.mark.training
def test_a_real_rloo_run_records_the_measured_heldout_accuracy(
    project, researcher, tiny_model_dir, reward_model_dir, tmp_path
):
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.training.webdata import make_judged_snapshot
    from training.data import load_stage_data

    snapshot = make_judged_snapshot(project, tmp_path, user=researcher)
    call_command(
        "train_rl", "--dataset", str(snapshot.pk), "--model", str(tiny_model_dir),
        # An untrained reward model (the tiny model with a new score head).
        "--reward-model", str(reward_model_dir),
        "--num-generations", "2", "--max-completion-length", "8",
        "--max-steps", "3", "--logging-steps", "1", "--save-steps", "3",
        "--heldout-steps", "1", "--learning-rate", "1e-3",
        "--per-device-train-batch-size", "4", "--eval-strategy", "no",
        "--no-gradient-checkpointing", "--output-dir", str(tmp_path / "rl"),
    )  # fmt: skip
    run = TrainingRun.objects.get()
    assert run.status == RunStatus.SUCCEEDED, run.error
    eval_rows = {m.step: m.values for m in run.metrics.filter(split="eval")}
    assert sorted(eval_rows) == [1, 2, 3]
    assert all(0.0 <= v[ACCURACY_METRIC] <= 1.0 for v in eval_rows.values())
    series = selectors.run_metric_series(run=run)
    assert series[ACCURACY_METRIC]["steps"] == [1, 2, 3]
    assert len(set(series[MARGIN_METRIC]["values"])) > 1  # the policy moved

    # The last measurement is of the final policy against the reference (the base
    # model with the adapter off): recompute it independently from the saved model.
    heldout = load_stage_data(str(snapshot.pk), "dpo").eval
    policy = AutoPeftModelForCausalLM.from_pretrained(run.output_dir).eval()
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    accuracy, margin = reference_accuracy(policy, reference, tokenizer, heldout)
    assert eval_rows[3][ACCURACY_METRIC] == pytest.approx(accuracy)
    assert eval_rows[3][MARGIN_METRIC] == pytest.approx(margin, abs=MARGIN_ATOL)
