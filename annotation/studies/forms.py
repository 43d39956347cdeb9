"""Forms of the annotator UI."""

import copy

from django import forms

from annotation.models import Study

# Every demographics question is optional to answer ("prefer not to say" is blank):
# answers help describe the sample, never gate taking part.
_BLANK = [("", "Prefer not to say")]
DEMOGRAPHIC_QUESTIONS = {
    "age_range": forms.ChoiceField(
        label="Age",
        required=False,
        choices=_BLANK
        + [(v, v) for v in ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")],
    ),
    "gender": forms.ChoiceField(
        label="Gender",
        required=False,
        choices=_BLANK
        + [
            ("woman", "Woman"),
            ("man", "Man"),
            ("non-binary", "Non-binary"),
            ("other", "Another gender"),
        ],
    ),
    "country": forms.CharField(
        label="Country you live in",
        required=False,
        max_length=60,
        widget=forms.TextInput(attrs={"autocomplete": "country-name"}),
    ),
    "art_experience": forms.ChoiceField(
        label="Experience with art, design or photography",
        required=False,
        choices=_BLANK
        + [
            ("none", "None"),
            ("hobby", "Hobby"),
            ("studied", "Studied it"),
            ("professional", "Work in it"),
        ],
    ),
}


class ConsentForm(forms.Form):
    """Consent checkbox plus the demographics questions this study asks."""

    agree = forms.BooleanField(
        required=True,
        label="I have read the information above and agree to take part.",
        error_messages={"required": "Please tick the box to agree before starting."},
    )

    def __init__(self, *args, study: Study, **kwargs):
        super().__init__(*args, **kwargs)
        for name in study.demographics_fields or ():
            if name in DEMOGRAPHIC_QUESTIONS:
                self.fields[name] = copy.deepcopy(DEMOGRAPHIC_QUESTIONS[name])

    def demographics(self) -> dict:
        return {
            k: v
            for k, v in self.cleaned_data.items()
            if k in DEMOGRAPHIC_QUESTIONS and v
        }


class ScoreForm(forms.Form):
    score = forms.IntegerField()
