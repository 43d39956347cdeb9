"""Set-up shared by the benchmarks that run the real services on a database of
their own (created next to DATABASE_URL's, never the one pytest uses)."""

import os
from pathlib import Path


def setup_django(data_dir: str, suffix: str):
    """Configure Django for a benchmark and create its throwaway test database.

    Returns (connection, original database name) for ``destroy_test_db``.
    """
    os.environ["PALATE_DATA_DIR"] = data_dir
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
    import django

    django.setup()
    from django.conf import settings
    from django.db import connection
    from django.test.utils import setup_test_environment

    settings.MEDIA_ROOT = Path(data_dir) / "media"
    settings.REWARDMODEL_DIR = str(Path(data_dir) / "rm")
    setup_test_environment()
    old_name = connection.settings_dict["NAME"]
    if connection.vendor == "postgresql":
        connection.settings_dict.setdefault("TEST", {})["NAME"] = (
            f"test_{old_name}_{suffix}"
        )
    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    return connection, old_name
