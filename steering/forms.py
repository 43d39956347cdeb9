"""The staff form that starts an optimisation."""

from django import forms
from django.db.models import Count
from django.urls import reverse

from annotation.studies.models import Participation
from generation.backends import BACKENDS

from .models import DEFAULT_CAUTION, MAX_CAUTION, MAX_PER_ROUND, MAX_ROUNDS
from .proposers import PROPOSERS

MAX_CHOICES = 1000


def target_choices() -> list[tuple[str, str]]:
    """(study, annotator) pairs with ratings, most ratings first (never an
    erased person)."""
    rows = (
        Participation.objects.filter(
            consented_at__isnull=False, annotator__erased_at__isnull=True
        )
        .select_related("study", "annotator")
        .annotate(n=Count("annotator__ratings"))
        .filter(n__gt=0)
        .order_by("study__name", "-n", "annotator__public_id")[:MAX_CHOICES]
    )
    return [
        (
            f"{p.study_id}:{p.annotator_id}",
            f"{p.study.name} — {p.annotator.public_id} ({p.n} ratings)",
        )
        for p in rows
    ]


class OptimizationForm(forms.Form):
    target = forms.ChoiceField(label="Study and annotator")
    prompt = forms.CharField(
        label="Base prompt", max_length=2000, widget=forms.Textarea(attrs={"rows": 2})
    )
    proposer = forms.ChoiceField(
        choices=[
            ("attribute", "attribute editor, greedy"),
            ("beam", "attribute editor, evolutionary beam"),
            ("llm", "LLM rewriter"),
        ],
        initial="beam",
    )
    backend = forms.ChoiceField(
        choices=[(b, b) for b in sorted(BACKENDS)], initial="procedural"
    )
    # Few wide rounds by default (docs/steering.md, "Search settings").
    rounds = forms.IntegerField(min_value=1, max_value=MAX_ROUNDS, initial=3)
    per_round = forms.IntegerField(
        label="Variants per round", min_value=1, max_value=MAX_PER_ROUND, initial=10
    )
    max_images = forms.IntegerField(
        label="Maximum images (budget)", min_value=1, initial=31
    )
    caution = forms.FloatField(
        label="Caution (posterior sds)",
        min_value=0,
        max_value=MAX_CAUTION,
        initial=DEFAULT_CAUTION,
        required=False,
        help_text="Candidates are ranked by personal score − caution × its spread; "
        "0 ranks by the personal score alone.",
        widget=forms.NumberInput(attrs={"step": "0.1"}),
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["target"].choices = target_choices()
        # With htmx the cost table follows these two fields as they change.
        for name in ("backend", "max_images"):
            self.fields[name].widget.attrs.update(
                {
                    "hx-get": reverse("steering:estimate"),
                    "hx-trigger": "change, input changed delay:300ms",
                    "hx-target": "#estimate",
                    "hx-swap": "outerHTML",
                    "hx-include": "#id_backend, #id_max_images",
                }
            )
        assert set(dict(self.fields["proposer"].choices)) == set(PROPOSERS)

    def clean_caution(self) -> float:
        value = self.cleaned_data.get("caution")
        return DEFAULT_CAUTION if value is None else value

    def target_ids(self) -> tuple[int, int]:
        study_id, annotator_id = self.cleaned_data["target"].split(":")
        return int(study_id), int(annotator_id)
