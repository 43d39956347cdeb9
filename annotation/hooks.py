"""Extension points of the participant's pages, for apps above ``annotation``.

``annotation`` imports no app above it (docs/architecture.md), so an app that
adds something to a participant's pages (the taste portrait, ``portrait``)
registers a provider here from its ``AppConfig.ready``. A provider is called
with the keyword arguments ``page`` (``"rate"``: the full rating page, never its
htmx fragment, so the rating round trip costs nothing more; ``"done"``: the
completion page), ``study``, ``annotator`` and ``rated`` (counted ratings), and
returns a dict with any of:

* ``links``: ``(url, label)`` pairs shown on the page (the rating page's header,
  the completion page);
* ``hold_redirect``: true to keep the completion page from sending the
  participant on to the study's completion URL by itself (they go on with the
  page's button instead).

``participant_view`` gives such an app's own participant pages the checks and
error pages of the study's pages. ``export_table_register`` adds a table of such
an app's own to the study's dataset export (``ExportTable``). Like
``annotation.signals``, this module is part of ``annotation``'s public interface
(docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import wraps

_PROVIDERS: list[Callable[..., dict]] = []


def page_extras_register(provider: Callable[..., dict]) -> None:
    """Add ``provider`` (once, whatever how often ``ready`` runs)."""
    if provider not in _PROVIDERS:
        _PROVIDERS.append(provider)


def page_extras(**kwargs) -> dict:
    """What the registered providers add to one page: every link, and whether
    any of them holds the completion redirect."""
    out: dict = {"links": [], "hold_redirect": False}
    for provider in _PROVIDERS:
        got = provider(**kwargs) or {}
        out["links"].extend(got.get("links", ()))
        out["hold_redirect"] = out["hold_redirect"] or bool(got.get("hold_redirect"))
    return out


def participant_view(view: Callable) -> Callable:
    """Decorate a participant page of an app above ``annotation`` (URL argument
    ``slug``): it is called as ``view(request, study=, annotator=,
    participation=, **kwargs)`` after the checks every study page makes (the
    browser entered this study through its own link in this session, or is
    staff), and a ``PalateError`` becomes the same friendly page."""
    from annotation.studies.views import friendly_errors, participant_entered

    @wraps(view)
    def wrapper(request, slug: str, **kwargs):
        study, annotator, participation = participant_entered(request, slug)
        return view(
            request,
            study=study,
            annotator=annotator,
            participation=participation,
            **kwargs,
        )

    return friendly_errors(wrapper)


@dataclass(frozen=True)
class ExportTable:
    """A table an app above ``annotation`` adds to a study's dataset export
    (``annotation.datasets.services.export``): its own config, one split
    ``train``, written only when it has rows; never counted as ratings.

    * ``columns``: (name, dtype, description) triples, the dtype as `datasets`
      names it: ``int16``, ``int64``, ``float64``, ``bool``, ``string`` or
      ``timestamp[us, tz=UTC]``;
    * ``rows(study=, annotators=)``: the rows as tuples in column order, in a
      fixed order, of the annotators the export carries only (``annotators``:
      their queryset; the export's filters and erasure decide who they are);
      people appear by their pseudonymous ``public_id``, images by their id;
    * ``count(study=, annotators=)``: how many rows that is;
    * ``card(n)``: lines of Markdown for the dataset card, on what the table
      holds (``n`` rows), under a heading of its own."""

    config: str
    columns: tuple[tuple[str, str, str], ...]
    rows: Callable[..., Iterable[tuple]]
    count: Callable[..., int]
    card: Callable[[int], list[str]]


_EXPORT_TABLES: dict[str, ExportTable] = {}


def export_table_register(table: ExportTable) -> None:
    """Add ``table`` to every export (once, by config name)."""
    _EXPORT_TABLES[table.config] = table


def export_tables() -> list[ExportTable]:
    """The registered tables, by config name."""
    return [_EXPORT_TABLES[k] for k in sorted(_EXPORT_TABLES)]
