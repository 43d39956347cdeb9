"""Prompts: one cleaning rule, one get-or-create, imports from text, CSV or JSONL."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from annotation.studies.models import Study
from core.exceptions import InvalidInput

from ..models import PROMPT_MAX_CHARS, Prompt

MAX_TAGS = 20
MAX_IMPORT_ROWS = 5000
PROMPT_FORMATS = ("text", "csv", "jsonl")


def prompt_fields_clean(
    *, text: Any, domain: Any = "", tags: Any = None, negative_prompt: Any = ""
) -> dict:
    """The stored form of a prompt's fields; InvalidInput when one is unusable."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput("A prompt cannot be empty.")
    text = " ".join(text.split())
    if len(text) > PROMPT_MAX_CHARS:
        raise InvalidInput(
            f"A prompt has at most {PROMPT_MAX_CHARS} characters (this one has "
            f"{len(text)})."
        )
    domain = (domain or "").strip().lower() if isinstance(domain, str) else ""
    if len(domain) > 60:
        raise InvalidInput("A domain has at most 60 characters.")
    if tags is None or tags == "":
        tags = []
    if isinstance(tags, str):
        tags = [t for t in (p.strip() for p in tags.replace("|", ";").split(";")) if t]
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise InvalidInput("Tags must be a list of strings.")
    if len(tags) > MAX_TAGS:
        raise InvalidInput(f"A prompt has at most {MAX_TAGS} tags.")
    negative_prompt = (negative_prompt or "").strip()
    if len(negative_prompt) > PROMPT_MAX_CHARS:
        raise InvalidInput(
            f"A negative prompt has at most {PROMPT_MAX_CHARS} characters."
        )
    return {
        "text": text,
        "domain": domain,
        "tags": tags,
        "negative_prompt": negative_prompt,
    }


def _prompt_get_or_create(
    *, study: Study, fields: dict, created_by=None
) -> tuple[Prompt, bool]:
    """The one place a prompt row is made: same study + text + negative prompt
    is the same prompt (a DB constraint says so too)."""
    return Prompt.objects.get_or_create(
        study=study,
        text=fields["text"],
        negative_prompt=fields["negative_prompt"],
        defaults={
            "domain": fields["domain"],
            "tags": fields["tags"],
            "created_by": created_by,
        },
    )


def prompt_create(
    *,
    study: Study,
    text: str,
    domain: str = "",
    tags: list[str] | None = None,
    negative_prompt: str = "",
    created_by=None,
) -> Prompt:
    """Create a prompt, or return the study's existing one with the same text."""
    fields = prompt_fields_clean(
        text=text, domain=domain, tags=tags, negative_prompt=negative_prompt
    )
    prompt, _ = _prompt_get_or_create(study=study, fields=fields, created_by=created_by)
    return prompt


def _rows_from_text(content: str, domain: str) -> list[dict]:
    lines = [line for line in content.splitlines() if line.strip()]
    return [{"text": line, "domain": domain} for line in lines]


def _rows_from_csv(content: str, domain: str) -> list[dict]:
    reader = csv.DictReader(io.StringIO(content))
    if not reader.fieldnames or "text" not in [f.strip() for f in reader.fieldnames]:
        raise InvalidInput(
            "The CSV needs a header row with a 'text' column "
            "(optional: domain, tags, negative_prompt)."
        )
    rows = []
    for row in reader:
        row = {(k or "").strip(): v for k, v in row.items()}
        rows.append(
            {
                "text": row.get("text") or "",
                "domain": row.get("domain") or domain,
                "tags": row.get("tags") or [],
                "negative_prompt": row.get("negative_prompt") or "",
                "_line": reader.line_num,
            }
        )
    return rows


def _rows_from_jsonl(content: str, domain: str) -> list[dict]:
    rows = []
    for n, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"Line {n}: not valid JSON ({exc.msg}).") from None
        if not isinstance(obj, dict):
            raise InvalidInput(f"Line {n}: expected a JSON object.")
        rows.append(
            {
                "text": obj.get("text", obj.get("prompt", "")),
                "domain": obj.get("domain") or domain,
                "tags": obj.get("tags") or [],
                "negative_prompt": obj.get("negative_prompt") or "",
                "_line": n,
            }
        )
    return rows


_PARSERS = {"text": _rows_from_text, "csv": _rows_from_csv, "jsonl": _rows_from_jsonl}


def _parse_prompt_rows(*, content: str, fmt: str, domain: str) -> list[dict]:
    """Rows of prompt fields from pasted text, CSV or JSONL; errors name the line."""
    parser = _PARSERS.get(fmt)
    if parser is None:
        raise InvalidInput(f"Unknown prompt format '{fmt}' (text, csv or jsonl).")
    rows = parser(content, domain)
    if len(rows) > MAX_IMPORT_ROWS:
        raise InvalidInput(f"At most {MAX_IMPORT_ROWS} prompts per import.")
    return rows


@dataclass
class PromptImportResult:
    created: list[Prompt]
    existing: list[Prompt]

    @property
    def prompts(self) -> list[Prompt]:
        return self.created + self.existing


def prompts_import(
    *,
    study: Study,
    content: str | bytes,
    fmt: str = "text",
    domain: str = "",
    created_by=None,
) -> PromptImportResult:
    """Add prompts from pasted lines, CSV (header: text, domain, tags) or JSONL.

    All or nothing: one bad row refuses the whole import with its line number.
    Prompts already in the study are reported as existing, not duplicated.
    """
    if isinstance(content, bytes):
        try:
            content = content.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise InvalidInput("The file is not UTF-8 text.") from None
    rows = _parse_prompt_rows(content=content, fmt=fmt, domain=domain)
    if not rows:
        raise InvalidInput("No prompts found.")
    cleaned = []
    for i, row in enumerate(rows, start=1):
        line = row.pop("_line", i)
        try:
            cleaned.append(prompt_fields_clean(**row))
        except InvalidInput as exc:
            raise InvalidInput(f"Line {line}: {exc.message}") from None
    created, existing = [], []
    with transaction.atomic(durable=True):
        for fields in cleaned:
            prompt, was_created = _prompt_get_or_create(
                study=study, fields=fields, created_by=created_by
            )
            (created if was_created else existing).append(prompt)
    return PromptImportResult(created=created, existing=existing)
