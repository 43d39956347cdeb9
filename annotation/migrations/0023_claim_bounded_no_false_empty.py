"""palate_claim: a claim's cost no longer grows with the annotator's history,
and it never answers "nothing left" while an image is open to the annotator.

* Each fill level is read through a window of 32 images from the random
  starting point (each way round), so an annotator who was already dealt most
  of the fullest images (far ahead of the others) no longer walks past all of
  them; levels are tried strictly upwards, each once.
* The level search used to recompute "the fullest level above the floor" in a
  new snapshot after a level failed and make that the floor: when concurrent
  claims had just moved the failed level's images, the floor jumped past levels
  never tried, up to "nothing above" while thousands of images were open (19
  claims answered 204 in a 60 s load run, issue 29). Now the floor is the level
  tried; and when no level gives an image, an exact search that waits for
  locked images runs (only while the claim holds no image lock).

Python's ``picking.image_pick`` does the same. Text: ``sql/0023/`` (frozen copy
of ``annotation/engine/sql/palate_claim.sql``); backwards, 0021's copy.
"""

from importlib import import_module

from django.db import migrations

_0021 = import_module("annotation.migrations.0021_engine_sql_from_files")


class Migration(migrations.Migration):
    dependencies = [("annotation", "0022_submit_statistics_no_key_lock")]

    operations = [
        migrations.RunPython(
            _0021.install_sql_files("0023"),
            _0021.install_sql_files("0021", ["palate_claim"]),
            elidable=False,
        ),
    ]
