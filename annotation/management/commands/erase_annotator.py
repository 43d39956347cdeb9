"""erase_annotator ID: a participant's right to be forgotten."""

from django.core.management.base import BaseCommand, CommandError

from annotation import services
from annotation.models import Annotator


class Command(BaseCommand):
    help = (
        "Erase an annotator: exclude them (their ratings stop counting and every "
        "slot they held or filled is reopened), then remove what identifies them "
        "or was derived from their ratings alone (docs/integrity.md). Ratings stay "
        "as invalid records under a new random public id. Idempotent."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "annotator", help="public id (a-...), or the external id with --source"
        )
        parser.add_argument(
            "--source",
            help="look the annotator up by (source, external id), e.g. prolific",
        )
        parser.add_argument("--reason", default="", help="recorded with the erasure")

    def handle(self, *args, annotator, source, reason, **options):
        lookup = (
            {"source": source, "external_id": annotator}
            if source
            else {"public_id": annotator}
        )
        found = Annotator.objects.filter(**lookup).first()
        if found is None:
            raise CommandError(f"No annotator matches {lookup}.")
        reopened = services.annotator_erase(annotator_id=found.pk, reason=reason)
        found.refresh_from_db()
        self.stdout.write(
            f"Erased: excluded, personal data removed, exports of their studies "
            f"withdrawn, {reopened} slot(s) reopened; the kept invalid records are "
            f"now filed under {found.public_id}."
        )
