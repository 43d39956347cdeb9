import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

from core.hot_lane import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
