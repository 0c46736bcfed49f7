"""The "new run" form: a snapshot, a recipe, a base model and a few overrides.

The form only collects and type-checks; `training.services.run_queue` validates the
combination with the stage's config dataclass and its errors come back on the
field they concern.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms

from training.recipes_catalog import RECIPES

EXTRA_NOT_JSON = 'Not valid JSON: {error}. Write an object, e.g. {{"lora_r": 8}}.'
EXTRA_NOT_OBJECT = 'Write a JSON object of setting: value, e.g. {"lora_r": 8}.'
ONLY_FOR_KINDS = "{field} applies to {kinds} runs only; the {recipe} recipe is {kind}."

# Form field -> config setting, and the run kinds it applies to (None: all).
OVERRIDE_FIELDS: dict[str, tuple[str, ...] | None] = {
    "learning_rate": None,
    "max_steps": None,
    "num_train_epochs": None,
    "per_device_train_batch_size": None,
    "seed": None,
    "beta": ("dpo", "rl"),
    "reward_model": ("rl",),
}


class RunQueueForm(forms.Form):
    snapshot = forms.ModelChoiceField(
        queryset=None, help_text="A finished snapshot of one of your projects."
    )
    recipe = forms.ChoiceField(
        choices=[(r.name, f"{r.title} ({r.name})") for r in RECIPES.values()]
    )
    base_model = forms.CharField(
        required=False,
        max_length=500,
        help_text="A directory the worker can read, or a hub id. Leave empty to "
        "start from the parent run's final checkpoint.",
    )
    parent = forms.ModelChoiceField(
        queryset=None,
        required=False,
        help_text="A succeeded run this one continues (e.g. SFT before DPO).",
    )
    name = forms.CharField(required=False, max_length=200)
    learning_rate = forms.FloatField(required=False, min_value=0)
    max_steps = forms.IntegerField(required=False, min_value=-1)
    num_train_epochs = forms.FloatField(required=False, min_value=0)
    per_device_train_batch_size = forms.IntegerField(required=False, min_value=1)
    seed = forms.IntegerField(required=False, min_value=0)
    beta = forms.FloatField(
        required=False, min_value=0, help_text="DPO and RL: strength of the KL term."
    )
    reward_model = forms.CharField(
        required=False,
        max_length=1000,
        help_text="RL: a reward run id or a directory holding a reward model.",
    )
    extra = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        label="More settings (JSON)",
        help_text='Any config setting by its TRL name, e.g. {"lora_r": 8}.',
    )

    def __init__(self, *args, snapshots, parents, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["snapshot"].queryset = snapshots
        self.fields["snapshot"].label_from_instance = lambda snap: (
            f"#{snap.pk} {snap.project.slug}: {snap.name or snap.format} "
            f"({snap.format})"
        )
        self.fields["parent"].queryset = parents
        self.fields["parent"].label_from_instance = lambda run: (
            f"#{run.pk} {run.kind}: {run.name or run.base_model}"
        )

    def clean_extra(self) -> dict[str, Any]:
        raw = self.cleaned_data["extra"].strip()
        if not raw:
            return {}
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(EXTRA_NOT_JSON.format(error=exc)) from exc
        if not isinstance(value, dict):
            raise forms.ValidationError(EXTRA_NOT_OBJECT)
        return value

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        recipe = RECIPES.get(data.get("recipe", ""))
        if recipe is None:
            return data
        for name, kinds in OVERRIDE_FIELDS.items():
            if data.get(name) not in (None, "") and kinds and recipe.kind not in kinds:
                self.add_error(
                    name,
                    ONLY_FOR_KINDS.format(
                        field=name,
                        kinds=" and ".join(kinds),
                        recipe=recipe.name,
                        kind=recipe.kind,
                    ),
                )
        return data

    def overrides(self) -> dict[str, Any]:
        """The settings the person filled in, over the recipe's."""
        data = self.cleaned_data
        chosen = {
            name: data[name]
            for name in OVERRIDE_FIELDS
            if data.get(name) not in (None, "")
        }
        return {**data.get("extra", {}), **chosen}
