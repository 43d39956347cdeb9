"""django-axes' login throttling, for logins that come through HTTP."""

from axes.backends import AxesStandaloneBackend


class HttpLoginThrottle(AxesStandaloneBackend):
    """Axes' backend, but a login without a request (the test client's
    ``login()``, a management command, a shell) is not an HTTP login to throttle:
    it is passed on to the next backend instead of raising. Every web login (the
    admin's, DRF's) passes its request, so those are all counted and locked out."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username, password, **kwargs)
