"""What each destructive dashboard action says before it acts (``core.confirm``).

Every number comes from a selector that computes what the action would do, for
the study on screen, at the moment the page is drawn; the action itself counts
again under its locks and reports what it did.
"""

from django.urls import reverse

from annotation.models import Annotator, Study
from annotation.participants.selectors import (
    StudyEffect,
    check_removal_effect,
    exclusion_effects,
)
from core.confirm import Confirmation
from core.exceptions import NotFound
from rewardmodel import selectors as rm
from rewardmodel.models import ModelVersion

# Annotator actions that ask first (pause and resume are undone by each other).
FINAL_ACTIONS = {"exclude", "exclude_all", "erase"}


def _effect_line(e: StudyEffect) -> str:
    return (
        f"{e.study.name}: invalidates {e.ratings} valid rating"
        f"{'' if e.ratings == 1 else 's'}, ends {e.leases} live lease"
        f"{'' if e.leases == 1 else 's'} and reopens {e.slots} slot"
        f"{'' if e.slots == 1 else 's'}."
    )


def _everywhere_lines(person: Annotator) -> list[str]:
    effects = exclusion_effects(annotator=person)
    if not effects:
        return ["They take part in no study: no rating or slot changes."]
    total = sum(e.slots for e in effects)
    return [_effect_line(e) for e in effects] + [
        f"In all: {total} slots reopen in {len(effects)} "
        f"stud{'y' if len(effects) == 1 else 'ies'}; they can no longer claim or "
        "rate images in any of them."
    ]


def annotator_confirmation(study: Study, person: Annotator, action: str):
    """The confirmation for ``action`` on ``person``, asked from ``study``'s page."""
    back = reverse("dashboard:annotator", args=[study.pk, person.pk])
    ctx = {"study": study, "tab": "annotators"}
    pid = person.public_id
    if action == "exclude":
        (here,) = exclusion_effects(annotator=person, study=study)
        others = len(exclusion_effects(annotator=person)) - 1
        return Confirmation(
            title=f"Exclude annotator {pid} from {study.name}?",
            lines=[
                f"Exclude annotator {pid} from study {study.name}: invalidates "
                f"{here.ratings} ratings and reopens {here.slots} slots in study "
                f"{study.name} ({here.leases} live leases end).",
                f"They can no longer claim or rate images in {study.name}.",
                f"Their ratings in other studies stay valid ({others} other "
                f"stud{'y' if others == 1 else 'ies'}); to exclude them "
                "everywhere, use “Exclude from every study”.",
            ],
            confirm_label=f"Exclude from {study.name}",
            cancel_url=back,
            context=ctx,
        )
    if action == "exclude_all":
        return Confirmation(
            title=f"Exclude annotator {pid} from every study?",
            lines=_everywhere_lines(person),
            confirm_label="Exclude from every study",
            cancel_url=back,
            context=ctx,
        )
    return Confirmation(
        title=f"Erase annotator {pid} (right to be forgotten)?",
        lines=_everywhere_lines(person)
        + [
            "Removes their external id (e.g. the Prolific PID), their "
            "demographics and their account's name and e-mail; the account can no "
            "longer sign in and its API tokens are deleted.",
            f"What stays is a pseudonymous, invalid record under {pid}: scores "
            "and timings, kept out of every count, export and training run.",
        ],
        confirm_label=f"Erase {pid}",
        cancel_url=back,
        context=ctx,
    )


def check_confirmation(study: Study, check_id: int) -> Confirmation:
    effect = check_removal_effect(study=study, check_id=check_id)
    if effect is None:
        raise NotFound(f"No attention check {check_id} in this study.")
    if effect.deleted:
        lines = [
            f"Nobody has been shown attention check {check_id}: it is deleted, "
            f"with {effect.withdrawn} dealt item"
            f"{'' if effect.withdrawn == 1 else 's'} not yet shown withdrawn."
        ]
    else:
        lines = [
            f"Attention check {check_id} was shown {effect.kept} time"
            f"{'' if effect.kept == 1 else 's'} to {effect.annotators} annotator"
            f"{'' if effect.annotators == 1 else 's'}: it is retired (never "
            "shown again), not deleted, and those answers stay in their "
            "quality statistics.",
            f"{effect.withdrawn} dealt item{'' if effect.withdrawn == 1 else 's'} "
            "not yet shown are withdrawn.",
        ]
    return Confirmation(
        title=f"Remove attention check {check_id}?",
        lines=lines,
        confirm_label="Remove the check",
        cancel_url=reverse("dashboard:quality", args=[study.pk]),
        context={"study": study, "tab": "quality"},
    )


def _describe(v: ModelVersion) -> str:
    n = (v.data_counts or {}).get("ratings_train")
    trained = f", trained on {n} ratings" if n is not None else ""
    return f"v{v.pk} (made {v.created_at:%d %b %Y %H:%M} UTC{trained})"


def version_confirmation(version: ModelVersion) -> Confirmation:
    """Making ``version`` the active one for its scope (promote or roll back)."""
    scope = f"study {version.study.name}" if version.study_id else "every study"
    current = (
        ModelVersion.objects.filter(is_active=True, study_id=version.study_id).first()
        if version.study_id
        else rm.version_active()
    )
    was = (
        f"Predictions for {scope} switch from {_describe(current)} to "
        f"{_describe(version)}."
        if current is not None
        else f"Predictions for {scope} come from {_describe(version)} (none was "
        "active for it)."
    )
    return Confirmation(
        title=f"Make v{version.pk} active for {scope}?",
        lines=[
            was,
            "The annotator pages, steering and predictions use it from now on.",
        ],
        confirm_label=f"Make v{version.pk} active",
        cancel_url=reverse("dashboard:model"),
        final=(
            f"v{current.pk} stays stored and can be made active again."
            if current is not None
            else ""
        ),
    )
