"""The participants' "this is me / this is not me" answers of one study as CSV,
with what the model predicted when they answered. Annotators by their
pseudonymous public id and images by sha256, the keys the dataset export uses,
so the file joins its tables."""

import csv
import sys

from django.core.management.base import BaseCommand, CommandError

from annotation.studies.models import Study

from ...selectors import FEEDBACK_COLUMNS, feedback_rows


class Command(BaseCommand):
    help = __doc__.split("\n\n")[0]

    def add_arguments(self, parser):
        parser.add_argument("study", help="the study's slug")
        parser.add_argument("--out", help="CSV file (default: standard output)")

    def handle(self, *args, study, out=None, **options):
        found = Study.objects.filter(slug=study).first()
        if found is None:
            raise CommandError(f"No study '{study}'.")
        fh = open(out, "w", newline="") if out else sys.stdout  # noqa: SIM115
        try:
            writer = csv.writer(fh)
            writer.writerow(FEEDBACK_COLUMNS)
            n = 0
            for row in feedback_rows(study=found).iterator():
                writer.writerow(
                    [v.isoformat() if hasattr(v, "isoformat") else v for v in row]
                )
                n += 1
        finally:
            if out:
                fh.close()
        self.stderr.write(f"{n} answers of study '{study}'")
