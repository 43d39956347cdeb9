"""The submit's small helpers, rewritten so that PostgreSQL plans them once.

``palate_split_unit`` (0007) and ``palate_time_bucket`` (0011) were LANGUAGE sql
functions with a FROM clause. PostgreSQL cannot inline those, so every call went
through its SQL-function executor, which parses and plans the body again in each
transaction. A profile of the load benchmark (``perf``, issue 16) put 12% of the
database's CPU there, three calls per rating. Now ``palate_split_unit`` is PL/pgSQL
(its statements are planned once per connection) and ``palate_time_bucket`` is a
single immutable expression, which the planner inlines into the caller.
``palate_pair_add`` / ``palate_pair_corr`` (0011) read their six sums with a
subquery over ``jsonb_array_elements``, a whole executor run per call (three
per rating); now they index the array directly. Same results, bit for bit
(tests/annotation/test_engine_sql.py, test_quality_sql.py).
"""

from importlib import import_module

from django.db import migrations

_0007 = import_module("annotation.migrations.0007_engine_sql")
_0011 = import_module("annotation.migrations.0011_submit_quality_sql")

HELPERS = r"""
CREATE OR REPLACE FUNCTION palate_split_unit(p_study bigint, p_kind text, p_id bigint)
RETURNS float8 LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    -- annotation.splits._unit: the first 8 bytes of sha256, big-endian, / 2**64.
    v bigint := ('x' || substr(encode(sha256(convert_to(
        'palate-split:' || p_study || ':' || p_kind || ':' || p_id, 'UTF8')),
        'hex'), 1, 16))::bit(64)::bigint;
BEGIN
    RETURN (CASE WHEN v < 0 THEN v::numeric + 18446744073709551616 ELSE v::numeric
            END)::float8 / 18446744073709551616::float8;
END
$$;

CREATE OR REPLACE FUNCTION palate_time_bucket(p_ms int)
RETURNS int LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    -- quality.time_bucket with quality.TIME_EDGES_MS: the number of edges <= ms.
    SELECT (p_ms >= 500)::int + (p_ms >= 1000)::int + (p_ms >= 1500)::int
         + (p_ms >= 2000)::int + (p_ms >= 3000)::int + (p_ms >= 4000)::int
         + (p_ms >= 6000)::int + (p_ms >= 8000)::int + (p_ms >= 12000)::int
         + (p_ms >= 16000)::int + (p_ms >= 24000)::int + (p_ms >= 32000)::int
         + (p_ms >= 60000)::int + (p_ms >= 120000)::int
$$;
"""


# The pair helpers as in 0011, each with its subquery replaced by direct indexing.
_SUBQUERY = "ARRAY(SELECT e::text::float8 FROM jsonb_array_elements(p_sums) e)"
_INDEXED = "ARRAY[" + ", ".join(f"(p_sums ->> {i})::float8" for i in range(6)) + "]"


def _pair_helpers() -> str:
    pairs = (
        "CREATE OR REPLACE FUNCTION palate_pair_add("
        + _0011.HELPERS.split("CREATE OR REPLACE FUNCTION palate_pair_add(", 1)[1]
    )
    if pairs.count(_SUBQUERY) != 2:
        raise RuntimeError("0011's pair helpers changed: update this migration")
    return pairs.replace(_SUBQUERY, _INDEXED)


def _old_helpers() -> str:
    split_unit = _0007.SPLIT.split("CREATE OR REPLACE FUNCTION palate_split(")[0]
    if "palate_split_unit" not in split_unit or "palate_pair_corr" not in _0011.HELPERS:
        raise RuntimeError("0007/0011 changed: update this migration")
    return split_unit + _0011.HELPERS


def install(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(HELPERS + _pair_helpers(), params=None)


def uninstall(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(_old_helpers(), params=None)


class Migration(migrations.Migration):
    dependencies = [("annotation", "0014_qualityconfig_bounds_check_lock")]

    operations = [migrations.RunPython(install, uninstall, elidable=False)]
