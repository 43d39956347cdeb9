"""One confirmation step for every destructive staff action, checked by the server.

A destructive action's form posts to its own URL as usual. Without the
``confirmed`` field the view answers with a confirmation page instead of acting:
it states in numbers what the action will do, and carries the original fields
back in a form that adds ``confirmed=yes`` (Confirm) next to a link back
(Cancel). Only a POST carrying the field acts, so the guard is the server's and
works without JavaScript; no inline handler is needed (the Content-Security-
Policy allows scripts from ``'self'`` only).

Usage in a view::

    if not is_confirmed(request):
        return ask(request, Confirmation(title=..., lines=[...], ...))
    ...act...
"""

from dataclasses import dataclass, field

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

CONFIRM_FIELD = "confirmed"
_NOT_CARRIED = {"csrfmiddlewaretoken", CONFIRM_FIELD}


@dataclass
class Confirmation:
    """What the confirmation page says."""

    title: str  # the action, e.g. "Exclude 3f9c… from Study A?"
    lines: list[str]  # what will happen, in numbers, one consequence a line
    confirm_label: str  # the button that acts, e.g. "Exclude from Study A"
    cancel_url: str  # where Cancel leads (nothing changes)
    final: str = "This cannot be undone."
    # The page this one is drawn in (its header and navigation).
    base_template: str = "dashboard/_base.html"
    context: dict = field(default_factory=dict)  # e.g. the study, for its tabs


def is_confirmed(request: HttpRequest) -> bool:
    """Whether this POST came from a confirmation page's Confirm button."""
    return request.method == "POST" and request.POST.get(CONFIRM_FIELD) == "yes"


def ask(request: HttpRequest, confirmation: Confirmation) -> HttpResponse:
    """The confirmation page for this request: nothing has changed yet. Confirm
    posts the same fields to the same URL, with ``confirmed=yes``."""
    carried = [
        (name, value)
        for name, values in request.POST.lists()
        if name not in _NOT_CARRIED
        for value in values
    ]
    return render(
        request,
        "confirm.html",
        {
            **confirmation.context,
            "c": confirmation,
            "action": request.path,
            "carried": carried,
            "confirm_field": CONFIRM_FIELD,
        },
    )
