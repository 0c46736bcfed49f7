"""Build prompts, responses and comparisons for queue tests (setup only, no service)."""

import hashlib

from annotation.models import Comparison, Prompt, Response

MODEL_NAMES = ("secret-model-alpha-7b", "secret-model-beta-13b")


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def make_comparisons(project, n: int, *, gold: int = 0, tag: str = "") -> list:
    """Create `n` regular comparisons plus `gold` gold ones (gold answer "first")."""
    prompts = Prompt.objects.bulk_create(
        Prompt(
            project=project,
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": f"Question {tag}{i}?"},
            ],
            content_hash=_hash(f"{project.slug}{tag}{i}"),
        )
        for i in range(n + gold)
    )
    responses = Response.objects.bulk_create(
        Response(
            prompt=prompt,
            text=f"Answer {side} to {prompt.messages[1]['content']}",
            model_name=MODEL_NAMES[side],
            generation_params={"temperature": 0.7 + side},
            content_hash=_hash(f"{prompt.pk}-{side}"),
        )
        for prompt in prompts
        for side in (0, 1)
    )
    comparisons = Comparison.objects.bulk_create(
        Comparison(
            project=project,
            prompt=prompts[i],
            response_a=responses[2 * i],
            response_b=responses[2 * i + 1],
            gold_choice="first" if i >= n else None,
        )
        for i in range(n + gold)
    )
    return comparisons
