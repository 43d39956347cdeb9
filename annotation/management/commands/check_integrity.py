"""check_integrity [--study SLUG] [--repair]: the invariant check, for operators."""

from django.core.management.base import BaseCommand, CommandError

from annotation import services
from annotation.models import Study


class Command(BaseCommand):
    help = (
        "Compare every image's rating_count and lease_count with its rows and "
        "report drift: counters that disagree, images over target, duplicate "
        "pairs, valid ratings or live leases of excluded, erased or inactive "
        "annotators, image and rating tallies that differ from their rows. "
        "--repair fixes what the rows allow, then checks again. "
        "Exits 1 while drift remains."
    )

    def add_arguments(self, parser):
        parser.add_argument("--study", help="slug or id (default: every study)")
        parser.add_argument(
            "--repair", action="store_true", help="repair drift, then check again"
        )

    def handle(self, *args, study, repair, **options):
        study_id = None
        if study:
            found = Study.objects.filter(slug=study).first() or (
                Study.objects.filter(pk=int(study)).first() if study.isdigit() else None
            )
            if found is None:
                raise CommandError(f"No study '{study}'.")
            study_id = found.pk
        drift = (
            services.integrity_repair(study_id=study_id)
            if repair
            else services.integrity_check(study_id=study_id)
        )
        self._report(drift)
        if repair and not drift.ok:
            drift = services.integrity_check(study_id=study_id)
            self.stdout.write(f"After repair: {drift.summary()}")
        if not drift.ok:
            raise CommandError("Integrity drift remains (see above).", returncode=1)

    def _report(self, drift: services.Drift) -> None:
        self.stdout.write(f"Integrity: {drift.summary()}")
        for image_id, stored, rows in drift.rating_count:
            self.stdout.write(f"  image {image_id}: rating_count {stored}, rows {rows}")
        for image_id, stored, rows in drift.lease_count:
            self.stdout.write(f"  image {image_id}: lease_count {stored}, live {rows}")
        for image_id, target, held in drift.over_target:
            self.stdout.write(f"  image {image_id}: {held} held, target {target}")
        for label, rows in (
            ("ratings", drift.duplicate_ratings),
            ("assignments", drift.duplicate_assignments),
        ):
            for image_id, annotator_id, n in rows:
                self.stdout.write(
                    f"  image {image_id}, annotator {annotator_id}: {n} {label}"
                )
        if drift.excluded_valid_ratings:
            self.stdout.write(
                "  valid ratings of excluded/erased annotators: "
                f"{drift.excluded_valid_ratings[:20]}"
            )
        if drift.inactive_leases:
            self.stdout.write(
                f"  live leases of inactive annotators: {drift.inactive_leases[:20]}"
            )
        for study_id, kept, rows in drift.study_tally[:20]:
            self.stdout.write(f"  study {study_id}: images tally {kept}, rows {rows}")
        for annotator_id, study_id, rated, n, valid, v in drift.rating_tally[:20]:
            self.stdout.write(
                f"  annotator {annotator_id} in study {study_id}: tally "
                f"{rated} rated ({valid} valid), rows {n} ({v} valid)"
            )
