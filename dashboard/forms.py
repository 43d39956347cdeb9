from django import forms

from annotation.quality.models import QualityConfig


class QualityConfigForm(forms.ModelForm):
    class Meta:
        model = QualityConfig
        fields = [
            "attention_check_rate",
            "repeat_rate",
            "repeat_gap",
            "too_fast_ms",
            "too_fast_share",
            "straightline_run",
            "check_fail_share",
            "loo_min_corr",
            "retest_min_corr",
            "min_evidence",
            "min_checks",
            "auto_pause",
            "hard_check_failures",
            "hard_fast_share",
        ]


class AttentionCheckForm(forms.Form):
    file = forms.ImageField(help_text="PNG, JPEG or WebP.")
    expected_min = forms.IntegerField(label="Lowest passing answer")
    expected_max = forms.IntegerField(
        label="Highest passing answer", required=False, help_text="Empty: same."
    )
    instruction = forms.CharField(
        max_length=300,
        required=False,
        help_text=(
            "A note for staff, never shown to annotators: write the request "
            "('Please press 2') into the image itself."
        ),
    )


class NightlyForm(forms.Form):
    hour = forms.IntegerField(min_value=0, max_value=23)
    minute = forms.IntegerField(min_value=0, max_value=59)
    enabled = forms.BooleanField(required=False, initial=True)


class ActionForm(forms.Form):
    action = forms.ChoiceField(
        choices=[
            ("pause", "Pause"),
            ("resume", "Resume"),
            ("exclude", "Exclude from this study"),
            ("exclude_all", "Exclude from every study"),
            ("erase", "Erase"),
        ]
    )
    reason = forms.CharField(max_length=500, required=False)


class DealingForm(forms.Form):
    policy = forms.ChoiceField(
        choices=[("fullest-first", "Fullest first"), ("adaptive", "Adaptive")],
        help_text="Adaptive: past the warm-up, the open image that teaches the "
        "annotator's own model most, within the band (docs/dashboard.md).",
    )
    warmup = forms.IntegerField(
        min_value=0,
        max_value=1000,
        label="Warm-up (ratings)",
        help_text="Ratings dealt fullest-first before the model chooses.",
    )
    band = forms.IntegerField(
        min_value=0,
        max_value=1000,
        label="Band (open slots)",
        help_text="How far from full, beyond the fullest open image, a chosen "
        "image may be (0: only the fullest level).",
    )
