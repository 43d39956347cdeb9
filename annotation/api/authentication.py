"""Token authentication that loads the annotator along with the user."""

from django.utils.translation import gettext_lazy as _
from drf_spectacular.authentication import SessionScheme
from rest_framework import exceptions
from rest_framework.authentication import SessionAuthentication, TokenAuthentication


def token_key_plausible(key: str) -> bool:
    """DRF token keys are 40 hex digits; anything else cannot match one."""
    return len(key) == 40 and all(c in "0123456789abcdef" for c in key)


class AnnotatorTokenAuthentication(TokenAuthentication):
    """DRF's ``TokenAuthentication`` (same header, same errors), but the token
    query also joins the user's annotator, so ``annotator_for_user`` costs no
    query on the hot claim and rating endpoints. Status is still read fresh from
    the database on every request (nothing is cached between requests)."""

    def authenticate_credentials(self, key):
        if not token_key_plausible(key):  # e.g. a NUL, which SQL would refuse
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        model = self.get_model()
        try:
            token = model.objects.select_related("user", "user__annotator").get(key=key)
        except model.DoesNotExist:
            raise exceptions.AuthenticationFailed(_("Invalid token.")) from None
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        return (token.user, token)


class StaffSessionAuthentication(SessionAuthentication):
    """DRF's session authentication (with its CSRF check), for staff only.

    An annotator's browser session is scoped to the studies entered through their
    own links (``annotation.studies.views``); the API knows no such scope, so it
    does not
    accept annotator sessions at all: annotators use the API with a token, staff
    with either (the browsable docs use the session)."""

    def authenticate(self, request):
        result = super().authenticate(request)
        if result is not None and not result[0].is_staff:
            return None
        return result


class StaffSessionScheme(SessionScheme):
    """Documents ``StaffSessionAuthentication`` as the session cookie it is."""

    target_class = "annotation.api.authentication.StaffSessionAuthentication"
