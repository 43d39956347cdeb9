import subprocess
import sys

from django.conf import settings

CODE = """
import os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
import django
django.setup()
import config.urls  # noqa
import rewardmodel.api.views, rewardmodel.admin, rewardmodel.tasks  # noqa
import rewardmodel.inference, rewardmodel.services, rewardmodel.selectors  # noqa
from django.urls import resolve
resolve("/api/v1/rewardmodel/predict/")
heavy = sorted(m for m in ("torch", "open_clip") if m in sys.modules)
print("HEAVY:" + ",".join(heavy))
"""


def test_web_process_does_not_import_torch():
    out = subprocess.run(
        [sys.executable, "-c", CODE],
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "HEAVY:\n" in out.stdout, out.stdout + out.stderr
