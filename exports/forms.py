"""The snapshot settings form of the export page (also used for the preview)."""

from django import forms

from exports.aggregation import POLICIES
from exports.formats import FORMATS, SFT_STYLES, ExportConfig, SettingsError

POLICY_HELP = {
    "majority": "plurality of votes; a tie for the top count is dropped",
    "unanimous": "only comparisons where every vote agrees",
    "min_agreement": "plurality kept when its share of votes reaches the minimum",
    "gold_weighted": "votes weighted by each annotator's accuracy on gold tasks",
    "dawid_skene": "Dawid-Skene EM: per-annotator confusion matrices",
}


class SnapshotForm(forms.Form):
    name = forms.CharField(max_length=200, required=False)
    format = forms.ChoiceField(choices=[(f, f) for f in FORMATS], initial="preference")
    policy = forms.ChoiceField(
        choices=[(p, f"{p}: {POLICY_HELP[p]}") for p in POLICIES], initial="majority"
    )
    min_agreement = forms.FloatField(
        initial=0.5, min_value=0.01, max_value=1, help_text="For min_agreement."
    )
    min_votes = forms.IntegerField(initial=1, min_value=1)
    include_prior = forms.BooleanField(
        required=False, help_text="Count labels that came with imported pairs."
    )
    both_bad_as_negatives = forms.BooleanField(
        required=False, help_text="Unpaired format: both-bad gives two negatives."
    )
    sft_style = forms.ChoiceField(
        choices=[(s, s) for s in SFT_STYLES], initial="messages"
    )
    heldout_fraction = forms.FloatField(initial=0.1, min_value=0, max_value=0.99)
    seed = forms.IntegerField(initial=0)
    max_chars = forms.IntegerField(initial=20_000, min_value=1)

    @classmethod
    def with_defaults(cls, data) -> dict:
        """`data` (a QueryDict) with every setting it leaves out at its default."""
        defaults = {
            name: field.initial
            for name, field in cls.base_fields.items()
            if field.initial is not None
        }
        return {**defaults, **data.dict()}

    def to_config(self) -> ExportConfig:
        """The settings as an ExportConfig (SettingsError when they do not fit)."""
        return ExportConfig(
            **{k: v for k, v in self.cleaned_data.items() if k != "name"}
        )

    def add_settings_errors(self, exc: SettingsError) -> None:
        """Show a SettingsError's messages on their fields (others on the form)."""
        for field, message in exc.errors.items():
            self.add_error(field if field in self.fields else None, message)
