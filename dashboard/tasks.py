"""Celery tasks: thin wrappers that take ids and call ``dashboard.figures``."""

from celery import shared_task

from . import figures


@shared_task(name="dashboard.refresh_study_figures", expires=figures.STALE_S)
def refresh_study_figures(study_id: int) -> str:
    """Alpha and the dealing counts of one study, into its kept row."""
    return figures.figures_refresh(study_id=study_id)


@shared_task(name="dashboard.refresh_figures")
def refresh_figures() -> int:
    """The beat's: a refresh of every study whose figures are kept."""
    return figures.figures_refresh_all()
