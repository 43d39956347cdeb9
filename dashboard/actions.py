"""The annotator page's actions, once confirmed where they are final: each calls
its service and says what was done, in numbers, for the message shown next."""

from annotation.participants import services as participants_services
from annotation.studies.models import Annotator, Study


def annotator_act(
    *, study: Study, person: Annotator, action: str, reason: str, user
) -> str:
    """Do ``action`` (from ``study``'s page); the message to show."""
    pid = person.public_id
    if action == "erase":
        reopened = participants_services.annotator_erase(
            annotator_id=person.pk, reason=reason or f"dashboard, by {user}"
        )
        return f"{pid} erased; {reopened} slots reopened in all."
    if action == "exclude_all":
        events = participants_services.annotator_exclude_everywhere(
            annotator=person, user=user, reason=reason
        )
        touched = "; ".join(
            f"{e.study.name}: {e.slots_reopened} slots reopened"
            for e in events
            if e.study_id
        )
        return f"{pid} excluded from every study. {touched or 'No study touched.'}"
    event = participants_services.annotator_moderate(
        annotator=person, action=action, user=user, study=study, reason=reason
    )
    if action == "exclude":
        return (
            f"{pid} excluded from {study.name}; {event.slots_reopened} slots "
            f"reopened in {study.name}."
        )
    return f"{pid}: {event.get_action_display().lower()}."
