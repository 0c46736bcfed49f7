"""Test data for the UI tests: multi-turn prompts, responses with secret provenance.

Ids of prompts, responses and comparisons are set far above anything else in the
test database, so a blindness scan can look for them as whole numbers without
matching unrelated small integers in a page.
"""

import hashlib
import itertools

from annotation.models import Comparison, Prompt, Response

_ids = itertools.count(7_300_000_001)

PAYLOAD = (
    "Sure! <script>window.__pwned = 1; document.title = 'PWNED'</script>\n\n"
    "<img src=x onerror=\"window.__pwned = 2; document.title = 'PWNED'\">\n\n"
    "```python\nprint('<b>code</b>')\n```"
)


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def model_name(i: int, side: int) -> str:
    return f"hidden-model-{'ab'[side]}{i}-zq"


def make_task_data(project, n: int, *, gold: int = 0, payload_first: bool = False):
    """Create `n` regular and `gold` gold comparisons (gold answer "first").

    Responses carry distinctive model names and generation parameters. With
    `payload_first`, comparison 0's first response is an XSS payload.
    """
    comparisons = []
    for i in range(n + gold):
        prompt = Prompt.objects.create(
            pk=next(_ids),
            project=project,
            messages=[
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": f"Question number {i}: what is **{i}**?"},
                {"role": "assistant", "content": "Do you mean the number?"},
                {"role": "user", "content": "Yes, explain briefly."},
            ],
            external_id=f"prompt-ext-{i}-qq",
            content_hash=_hash(f"{project.slug}-prompt-{i}"),
        )
        responses = []
        for side in (0, 1):
            text = f"Answer {'AB'[side]} to question {i}."
            if payload_first and i == 0 and side == 0:
                text = PAYLOAD
            responses.append(
                Response.objects.create(
                    pk=next(_ids),
                    prompt=prompt,
                    text=text,
                    model_name=model_name(i, side),
                    generation_params={
                        "temperature": round(0.6113 + i / 1000 + side / 10000, 4),
                        "seed": 90_000_000 + 2 * i + side,
                        "system_fingerprint": f"fp-secret-{i}-{side}",
                    },
                    external_id=f"resp-ext-{i}-{side}-qq",
                    content_hash=_hash(f"{prompt.pk}-{side}"),
                )
            )
        comparisons.append(
            Comparison.objects.create(
                pk=next(_ids),
                project=project,
                prompt=prompt,
                response_a=responses[0],
                response_b=responses[1],
                random_key=i / (n + gold + 1),
                gold_choice="first" if i >= n else None,
            )
        )
    return comparisons
