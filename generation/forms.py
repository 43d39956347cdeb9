"""Forms of the staff generation pages (parsing only; rules live in services)."""

import json

from django import forms

from .backends import BACKENDS
from .models import MAX_SEEDS_PER_JOB


class PromptImportForm(forms.Form):
    FORMATS = [
        ("auto", "From the file name"),
        ("text", "One prompt per line"),
        ("csv", "CSV (text, domain, tags)"),
        ("jsonl", "JSON lines"),
    ]
    text = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 6}),
        required=False,
        label="Paste prompts",
        help_text="One prompt per line (or CSV / JSONL).",
    )
    file = forms.FileField(required=False, label="…or upload a CSV / JSONL file")
    format = forms.ChoiceField(choices=FORMATS, initial="auto")
    domain = forms.CharField(
        max_length=60,
        required=False,
        help_text="Default domain, e.g. art, design, fashion.",
    )

    def clean(self):
        data = super().clean()
        if not data.get("text", "").strip() and not data.get("file"):
            raise forms.ValidationError("Paste some prompts or choose a file.")
        return data

    def content_and_format(self) -> tuple[bytes | str, str]:
        data = self.cleaned_data
        upload = data.get("file")
        fmt = data["format"]
        if upload:
            content = upload.read()
            if fmt == "auto":
                name = upload.name.lower()
                fmt = (
                    "csv"
                    if name.endswith(".csv")
                    else "jsonl"
                    if name.endswith((".jsonl", ".json", ".ndjson"))
                    else "text"
                )
            return content, fmt
        content = data["text"]
        if fmt == "auto":
            first = content.lstrip()[:1]
            fmt = "jsonl" if first == "{" else "text"
        return content, fmt


class JobCreateForm(forms.Form):
    backend = forms.ChoiceField(choices=[(b, b) for b in BACKENDS])
    model = forms.CharField(
        max_length=300, required=False, help_text="Empty: the backend's default model."
    )
    n_seeds = forms.IntegerField(
        min_value=1, max_value=MAX_SEEDS_PER_JOB, initial=4, label="Seeds per prompt"
    )
    params = forms.CharField(
        required=False,
        label="Parameters (JSON)",
        widget=forms.TextInput(attrs={"placeholder": "{}"}),
    )
    domain = forms.CharField(
        max_length=60,
        required=False,
        help_text="Only prompts of this domain (empty: all).",
    )
    prompts = forms.MultipleChoiceField(
        required=False, choices=[], widget=forms.CheckboxSelectMultiple
    )

    def __init__(self, *args, prompt_choices=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["prompts"].choices = prompt_choices

    def clean_params(self):
        raw = (self.cleaned_data.get("params") or "").strip()
        if not raw:
            return {}
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc.msg}.") from None
        if not isinstance(value, dict):
            raise forms.ValidationError("Parameters must be a JSON object.")
        return value
