"""Writing an import's ratings in bounded batches (``import_export_file``):
the rows arrive from a second read of the ratings tables, so no list of every
rating is ever held (issue 29: 953 MB at 70,000 ratings before)."""

from itertools import islice

from annotation.models import Image, Rating

BATCH = 2000


def ratings_create(study, rows, ids, annotators, done, total, on_progress) -> int:
    """Write the ratings in batches of ``BATCH`` as they are read again;
    ``done``/``total`` feed ``on_progress``."""
    while chunk := list(islice(rows, BATCH)):
        objs = [
            Rating(
                study=study,
                image_id=ids[r["image"]],
                annotator=annotators[r["annotator"]],
                score=r["score"],
                time_on_item_ms=r["time_on_item_ms"],
                is_valid=r["is_valid"],
                split=r["split"],
            )
            for r in chunk
        ]
        created = Rating.objects.bulk_create(objs, batch_size=len(objs))
        # created_at is auto_now_add: restore the dataset's times afterwards.
        for obj, r in zip(created, chunk, strict=True):
            obj.created_at = r["created_at"]
        Rating.objects.bulk_update(created, ["created_at"], batch_size=500)
        done += len(chunk)
        if on_progress:
            on_progress("ratings", done, total)
    return done


def rating_counts_set(valid: dict[int, int], ids: dict[int, int]) -> None:
    """The new images' counters from the valid ratings counted (the images are
    new, their counters at zero), in batched UPDATEs rather than one per image."""
    images = [Image(pk=ids[i], rating_count=n) for i, n in sorted(valid.items()) if n]
    Image.objects.bulk_update(images, ["rating_count"], batch_size=1000)
