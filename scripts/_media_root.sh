#!/usr/bin/env bash
# Print Django's MEDIA_ROOT (the settings decide: DJANGO_MEDIA_ROOT, PALATE_DATA_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
DJANGO_SETTINGS_MODULE=${DJANGO_SETTINGS_MODULE:-config.settings.local} \
  .venv/bin/python -c 'import django; django.setup()
from django.conf import settings; print(settings.MEDIA_ROOT)'
