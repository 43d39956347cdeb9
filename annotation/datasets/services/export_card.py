"""The dataset card (README.md) of an export: YAML front matter the Hugging Face
Hub reads (configs with their data files, features, splits, licence) and prose
for a person (what the study is, its scale, agreement, how it was collected).

Every statement about the data is derived from the exported data itself (how many
ratings were collected here or imported, how many carry a time on item, how many
times an annotator was shown an image again, the ids and sources of the
annotators), never assumed from how the platform usually works; nothing comes
from the time of the export, so the card is as deterministic as the tables.
"""

from __future__ import annotations

import json
import statistics
from typing import TYPE_CHECKING

import numpy as np

from annotation import selectors
from annotation.engine.selectors import dealing_counts
from annotation.models import DEMOGRAPHIC_FIELDS, Study

if TYPE_CHECKING:
    from annotation.datasets.services.export import ExportOptions, SplitFiles
    from annotation.datasets.services.export_columns import Column

SPLIT_MEANING = {
    "train": "known annotators, training images",
    "val_seen": "known annotators on images held out for validation",
    "val_unseen": "annotators held out entirely (validation)",
    "test_seen": "known annotators on images held out for testing",
    "test_unseen": "annotators held out entirely (test)",
}


def _alpha(rows: list[dict[int, int]], values: list[int]) -> float | None:
    """Krippendorff's alpha (interval) from per-image score counts (images x
    scale points), so memory does not depend on the number of annotators. None
    when fewer than two images have two ratings or nobody disagrees at all."""
    import krippendorff

    pairable = [r for r in rows if sum(r.values()) >= 2]
    if len(pairable) < 2:
        return None
    index = {v: i for i, v in enumerate(values)}
    counts = np.zeros((len(pairable), len(values)), dtype=np.int64)
    for u, row in enumerate(pairable):
        for score, n in row.items():
            counts[u, index[score]] = n
    if np.count_nonzero(counts.sum(axis=0)) < 2:
        return None  # one value only: alpha is undefined
    alpha = krippendorff.alpha(
        value_counts=counts, value_domain=values, level_of_measurement="interval"
    )
    return round(float(alpha), 4)


def agreement(*, ratings, scale: tuple[int, int]) -> dict:
    """Alpha over the exported ratings, and per image domain (by name order)."""
    by_image: dict[int, dict[int, int]] = {}
    domain_of: dict[int, str] = {}
    values = set(range(scale[0], scale[1] + 1))
    for image_id, domain, score, n in selectors.export_score_counts(ratings=ratings):
        by_image.setdefault(image_id, {})[score] = n
        domain_of[image_id] = domain
        values.add(score)
    ordered = sorted(values)
    per_domain: dict[str, list[dict[int, int]]] = {}
    for image_id, row in by_image.items():
        per_domain.setdefault(domain_of[image_id], []).append(row)
    return {
        "alpha": _alpha(list(by_image.values()), ordered),
        "by_domain": {
            d: {"images": len(rows), "alpha": _alpha(rows, ordered)}
            for d, rows in sorted(per_domain.items())
        },
    }


def dataset_stats(*, study: Study, ratings) -> dict:
    per_image = sorted(
        selectors.export_rating_counts_by_image(ratings=ratings).values()
    )
    span = selectors.export_rating_span(ratings=ratings)
    agreed = agreement(ratings=ratings, scale=(study.scale_min, study.scale_max))
    return {
        "collection": selectors.export_collection_counts(ratings=ratings),
        "consented": selectors.export_consented_count(study=study, ratings=ratings),
        "shown_again": selectors.export_shown_again(study=study, ratings=ratings),
        "images_over_target": sum(1 for n in per_image if n > study.raters_per_image),
        "alpha": agreed["alpha"],
        "alpha_by_domain": agreed["by_domain"],
        "images_rated": len(per_image),
        "raters_min": per_image[0] if per_image else 0,
        "raters_max": per_image[-1] if per_image else 0,
        "raters_mean": round(statistics.fmean(per_image), 2) if per_image else 0.0,
        "raters_median": statistics.median(per_image) if per_image else 0,
        "images_complete": sum(1 for n in per_image if n >= study.raters_per_image),
        "first": span["first"].date().isoformat() if span["first"] else "",
        "last": span["last"].date().isoformat() if span["last"] else "",
        "score_mean": round(span["mean"], 3) if span["mean"] is not None else None,
        "dealing": dealing_counts(ratings=ratings),
    }


def _size_category(n: int) -> str:
    for limit, name in (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
        (10_000_000, "1M<n<10M"),
    ):
        if n < limit:
            return name
    return "10M<n<100M"


def _yaml(obj, indent: int = 0) -> list[str]:
    """A small YAML emitter for the front matter: maps, lists, scalars. Strings are
    written as JSON strings, which YAML reads as they are."""
    pad = "  " * indent
    lines: list[str] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, dict | list) and v:
                lines.append(f"{pad}{k}:")
                lines.extend(_yaml(v, indent + 1))
            else:
                lines.append(f"{pad}{k}: {_scalar(v)}")
    else:
        for item in obj:
            sub = _yaml(item, indent + 1) if isinstance(item, dict | list) else None
            if sub:
                lines.append(f"{pad}- {sub[0].lstrip()}")
                lines.extend(sub[1:])
            else:
                lines.append(f"{pad}- {_scalar(item)}")
    return lines


def _scalar(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return str(v)
    if v is None:
        return "null"
    if isinstance(v, dict | list):
        return "{}" if isinstance(v, dict) else "[]"
    return json.dumps(str(v), ensure_ascii=False)


def _feature_yaml(col: Column) -> dict:
    if col.feature.get("_type") == "Image":
        return {"name": col.name, "dtype": "image"}
    return {"name": col.name, "dtype": col.feature["dtype"]}


def front_matter(
    *,
    study: Study,
    options: ExportOptions,
    written: dict[str, dict[str, SplitFiles]],
    columns: dict[str, list[Column]],
) -> dict:
    """Configs list only splits that have rows: `datasets` refuses a split
    without data files."""
    ext = options.fmt
    configs, infos = [], []
    for config, splits in written.items():
        present = {s: part for s, part in splits.items() if part.rows}
        configs.append(
            {
                "config_name": config,
                **({"default": True} if config == "ratings" else {}),
                "data_files": [
                    {"split": s, "path": f"{config}/data/{s}-*.{ext}"} for s in present
                ],
            }
        )
        infos.append(
            {
                "config_name": config,
                "features": [_feature_yaml(c) for c in columns[config]],
                "splits": [
                    {"name": s, "num_bytes": part.nbytes, "num_examples": part.rows}
                    for s, part in present.items()
                ],
                "download_size": sum(
                    p.stat().st_size for part in present.values() for p in part.files
                ),
                "dataset_size": sum(part.nbytes for part in present.values()),
            }
        )
    total = sum(part.rows for part in written["ratings"].values())
    return {
        "license": options.license,
        "pretty_name": study.name,
        "language": ["en"],
        "task_categories": ["image-classification", "text-to-image"],
        "tags": ["aesthetics", "personalization", "human-feedback", "palate"],
        "size_categories": [_size_category(total)],
        "configs": configs,
        "dataset_info": infos,
    }


def card_render(
    *,
    study: Study,
    options: ExportOptions,
    written: dict[str, dict[str, SplitFiles]],
    stats: dict,
    columns: dict[str, list[Column]],
) -> str:
    from annotation.datasets.services.export import SINGLE_SPLIT

    meta = front_matter(study=study, options=options, written=written, columns=columns)
    split_counts = {s: part.rows for s, part in written["ratings"].items()}
    n_images = written["images"][SINGLE_SPLIT].rows
    n_annotators = written["annotators"][SINGLE_SPLIT].rows
    body = _prose(study, options, split_counts, n_images, n_annotators, stats, columns)
    return "---\n" + "\n".join(_yaml(meta)) + "\n---\n\n" + body


def _prose(study, options, split_counts, n_images, n_annotators, stats, columns):
    total = sum(split_counts.values())
    alpha = stats["alpha"]
    labels = ", ".join(
        f"{v} = {label}" if label else str(v) for v, label in study.scale_points
    )
    asked = [f for f in (study.demographics_fields or []) if f in DEMOGRAPHIC_FIELDS]
    lines = [
        f"# {study.name}",
        "",
        (
            study.description.strip()
            or f"Ratings collected in the Palate study `{study.slug}`."
        ),
        "",
        "## Summary",
        "",
        "| | |",
        "| --- | --- |",
        f"| images | {n_images:,} ({stats['images_rated']:,} rated) |",
        f"| ratings | {total:,} |",
        f"| annotators | {n_annotators:,} |",
        f"| raters per image | target {study.raters_per_image}; mean "
        f"{stats['raters_mean']}, median {stats['raters_median']}, range "
        f"{stats['raters_min']}–{stats['raters_max']}; "
        f"{stats['images_complete']:,} images complete |",
        f"| agreement | Krippendorff's alpha (interval) = "
        f"{'n/a' if alpha is None else alpha} |",
        *_domain_rows(stats["alpha_by_domain"]),
        f"| scale | {study.scale_min}–{study.scale_max} ({labels}) |",
        f"| collected | {stats['first'] or 'n/a'} to {stats['last'] or 'n/a'} |",
        "",
        "## Configurations and splits",
        "",
        "Three tables, one configuration each. `ratings` carries the study's five "
        "stored splits (the same assignment the reward model trains and is "
        "evaluated on; seen = known annotators on new images, unseen = annotators "
        "held out entirely). `images` and `annotators` are single tables, published "
        "as one split named `train` as the Hub expects; join them to `ratings` on "
        "`image_id` and `annotator_id`.",
        "",
        "| split | ratings | meaning |",
        "| --- | ---: | --- |",
        *[f"| {s} | {n:,} | {SPLIT_MEANING[s]} |" for s, n in split_counts.items()],
        "",
    ]
    for config, cols in columns.items():
        lines += [f"### `{config}`", ""]
        lines += [f"- `{c.name}`: {c.description}" for c in cols]
        lines.append("")
    lines += _collection(study, options, asked, stats)
    lines += stats.get("sections", [])  # tables of apps above (``export_extra``)
    lines += _loading(options)
    return "\n".join(lines) + "\n"


def _domain_rows(by_domain: dict) -> list[str]:
    if len(by_domain) < 2:
        return []
    return [
        f"| agreement, {d or '(no domain)'} | alpha = "
        f"{'n/a' if v['alpha'] is None else v['alpha']} over {v['images']:,} images |"
        for d, v in by_domain.items()
    ]


def _collection(study, options, asked, stats) -> list[str]:
    kept = []
    if options.include_excluded:
        kept.append("excluded annotators and their ratings are kept (`excluded`)")
    if options.include_invalid:
        kept.append("ratings marked invalid are kept (`is_valid` = false)")
    filters = (
        "; ".join(kept)
        if kept
        else "annotators excluded by the researchers and invalid ratings are left out"
    )
    return [
        "## How it was collected",
        "",
        *_how_collected(study, stats),
        f"In this export {filters}. Images: "
        + {
            "embed": "embedded in the Parquet files.",
            "path": "files under `images/files/`, referenced by relative path.",
            "none": "not included (metadata only).",
        }[options.images],
        "",
        "## Privacy",
        "",
        _pseudonyms(stats["collection"]["ids_not_drawn"])
        + " No names, e-mail addresses, account names or "
        "recruiting-platform ids are exported, and nothing of annotators who asked "
        "to be forgotten. Demographics: "
        + (
            ", ".join(f"`{f}`" for f in asked)
            + " as self-reported, only for annotators who consented in this study."
            if asked
            else "none were asked in this study."
        ),
        "",
        "## Licence",
        "",
        f"`{options.license}` (set by the study's researchers at export).",
        "",
    ]


SOURCES = {
    "invite": "an invite link",
    "prolific": "a Prolific link",
    "staff": "an account made by staff",
    "demo": "the demo",
    "import": "an import",
}


def _timed(n: int, of: int, what: str) -> str:
    """How many of ``of`` ratings carry a time on item: "all 600 carry
    ``what``", "none carries one", "12 of the 600 carry ``what``"."""
    if n == of:
        return f"all {of:,} carry {what}" if of > 1 else f"it carries {what}"
    return "none carries one" if n == 0 else f"{n:,} of the {of:,} carry {what}"


def _how_collected(study, stats) -> list[str]:
    """Paragraphs of "How it was collected", each sentence from a count."""
    c = stats["collection"]
    out = []
    if c["collected"]:
        out += [_collected_here(study, stats), ""]
    if c["imported"]:
        out += [
            f"{c['imported']:,} of the ratings were imported from another dataset "
            "rather than collected here; of those, "
            + _timed(
                c["imported_timed"], c["imported"], "the time on item recorded there"
            )
            + ".",
            "",
        ]
    shown = _shown_again(stats["shown_again"], collected=c["collected"])
    out += [_dealing(study, ratings_dealt(stats)), ""] if c["collected"] else []
    return out + ([shown, ""] if shown else [])


def ratings_dealt(stats) -> dict:
    return stats.get("dealing") or {"adaptive": 0, "fullest_first": 0}


def _dealing(study, dealt: dict) -> str:
    """The dealing policy and what it means for the data (issue 27)."""
    text = (
        f"Dealing policy: `{study.dealing_policy}` (warm-up "
        f"{study.dealing_warmup} ratings, band {study.dealing_band} open slots). "
        f"Of the ratings collected here, {dealt['adaptive']:,} were dealt "
        f"adaptively and {dealt['fullest_first']:,} fullest first (the fullest "
        "open image, random among equals)."
    )
    if dealt["adaptive"] or study.dealing_policy == "adaptive":
        text += (
            " An adaptively dealt image was the one its annotator's own reward "
            "model was most uncertain about, among images close to their "
            "target: **which images a person rated depends on their earlier "
            "ratings**, so a person's images are not a random sample of the "
            "study's. The per-rating fields `dealing_policy`, `dealing_rank` "
            "and `dealing_information` say how each image was dealt."
        )
    return text


def _collected_here(study, stats) -> str:
    c = stats["collection"]
    people = sum(c["sources"].values())
    over = stats["images_over_target"]
    return " ".join(
        [
            f"{c['collected']:,} ratings were collected here, each answering an "
            f"assignment Palate's engine dealt, by {people:,} "
            f"{'annotator who' if people == 1 else 'annotators who'} joined "
            "through "
            + ", ".join(f"{SOURCES.get(s, s)} ({n:,})" for s, n in c["sources"].items())
            + f"; {stats['consented']:,} of them consented in this study.",
            f"The engine deals each image until it has {study.raters_per_image} "
            "valid ratings (the study's target) and gives an annotator each image "
            "to rate at most once (a database constraint); here "
            f"{stats['images_complete']:,} of the {stats['images_rated']:,} rated "
            "images reached the target"
            + (f" and {over:,} carry more ratings than it." if over else "."),
            _per_annotator(c["per_annotator"], study.quota_per_annotator),
            "Time on item (`time_on_item_ms`) is measured by the server, from the "
            "moment the image was shown to the rating; of the ratings collected "
            "here, " + _timed(c["collected_timed"], c["collected"], "it") + ".",
        ]
    )


def _per_annotator(per: list[int], quota: int) -> str:
    if per[0] == per[-1]:
        spread = f"Every annotator has {per[0]:,} ratings in this export"
    else:
        spread = (
            f"Annotators have {per[0]:,} to {per[-1]:,} ratings each in this "
            f"export (median {statistics.median(per):g})"
        )
    return f"{spread}; the study's quota is {quota} per annotator."


def _shown_again(items: dict, *, collected: int) -> str:
    """What annotators were shown between counted images (never among the
    ratings; listed in the ``quality_items`` config)."""
    said = []
    if items["repeat"]:
        said.append(
            f"Quality control showed {items['repeat']:,} repeats: an image the "
            "annotator had already rated, shown again later to measure "
            "test-retest reliability."
        )
    if items["attention"]:
        said.append(
            f"{'It' if said else 'Quality control'} showed "
            f"{items['attention']:,} attention checks (images that are not part of "
            "the dataset)."
        )
    if items["blind"]:
        said.append(
            f"Prompt steering showed {items['blind']:,} images in blind paired tests."
        )
    again = items["rated_image_again"]
    if again:
        said.append(
            f"In all, an annotator was shown an image they had already rated "
            f"{again:,} times."
        )
    elif collected:
        said.append("No annotator was shown an image they had already rated.")
    if said and any(items.values()):
        said.append(
            "These items are not ratings; the `quality_items` config lists each "
            "one answered or skipped, with its kind and the answer."
        )
    return " ".join(said)


def _pseudonyms(not_drawn: int) -> str:
    if not not_drawn:
        return (
            "Annotators appear only under a random pseudonymous id (`a-` followed "
            "by 12 hex digits)."
        )
    return (
        "Annotators appear only under pseudonymous ids: random ones Palate drew "
        f"(`a-` followed by 12 hex digits) and {not_drawn:,} kept as the imported "
        "dataset gave them."
    )


def _loading(options) -> list[str]:
    builder = {"parquet": "parquet", "jsonl": "json", "csv": "csv"}[options.fmt]
    return [
        "## Loading",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        'ratings = load_dataset("path/to/this/folder", "ratings")  # five splits',
        'images = load_dataset("path/to/this/folder", "images")["train"]',
        "# or one table directly:",
        f'load_dataset("{builder}", data_files={{"train": '
        f'"ratings/data/train-*.{options.fmt}"}})',
        "```",
    ]
