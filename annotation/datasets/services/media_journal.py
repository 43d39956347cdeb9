"""No image file without its row, even when an import dies half-way.

An import writes image files inside its transaction, before their rows commit.
If it fails, it deletes them itself; if its process dies (SIGKILL, OOM, power),
the database rolls the rows back but the files stay. So before writing a file,
the import writes its name to a journal that it holds locked (``flock``) for as
long as it runs. Every import first sweeps the journals nobody holds any more:
a file named there that has no ``Image`` row is deleted, then the journal.
``media_orphans_sweep`` runs the same sweep on demand.
"""

from __future__ import annotations

import fcntl
import os
import uuid
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.core.files.storage import default_storage

from annotation.models import Image

JOURNAL_DIR = ".import-journal"


def _folder() -> Path:
    folder = Path(settings.MEDIA_ROOT) / JOURNAL_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class MediaJournal:
    """The names of the files one import wrote (``add`` before writing)."""

    def __init__(self, fh):
        self._fh = fh
        self.names: list[str] = []

    def add(self, name: str) -> None:
        self.names.append(name)
        self._fh.write(name + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def discard_files(self) -> None:
        """The import failed: its rows are rolled back, so its files go."""
        _delete_unreferenced(self.names)


def _delete_unreferenced(names: list[str]) -> int:
    kept = set(Image.objects.filter(file__in=names).values_list("file", flat=True))
    gone = 0
    for name in dict.fromkeys(names):
        if name not in kept and default_storage.exists(name):
            default_storage.delete(name)
            gone += 1
    return gone


@contextmanager
def media_journal():
    """Hold a journal for one import; on any exception its files are deleted.
    Journals left by dead imports are swept first."""
    media_orphans_sweep()
    folder = _folder()
    tmp = folder / f".{uuid.uuid4().hex}.new"
    with tmp.open("a", encoding="utf-8") as fh:
        # Locked before it is visible under its final name, so a sweep never
        # takes a live import's journal for a dead one.
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        path = tmp.with_name(tmp.name[1:].replace(".new", ".log"))
        tmp.rename(path)
        journal = MediaJournal(fh)
        try:
            yield journal
        except BaseException:
            # If even this fails (the database is gone), the journal stays
            # for the next sweep.
            journal.discard_files()
            path.unlink(missing_ok=True)
            raise
        path.unlink(missing_ok=True)


def media_orphans_sweep() -> int:
    """Delete the files that dead imports wrote and whose rows never committed.
    Returns how many files went."""
    folder = Path(settings.MEDIA_ROOT) / JOURNAL_DIR
    if not folder.is_dir():
        return 0
    gone = 0
    for path in sorted(folder.glob("*.log")):
        try:
            fh = path.open("r", encoding="utf-8")
        except FileNotFoundError:
            continue  # its import just finished
        with fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live import holds it
            names = [line.strip() for line in fh if line.strip()]
            gone += _delete_unreferenced(names)
            path.unlink(missing_ok=True)
    return gone
