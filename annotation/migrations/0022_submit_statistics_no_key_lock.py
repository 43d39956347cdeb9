"""``palate_submit`` locks the annotator's statistics row (AnnotatorQuality)
``FOR NO KEY UPDATE`` instead of ``FOR UPDATE``, like the Python path
(``quality._locked_quality``): the update changes no key, and the convention
(docs/architecture.md, "Conventions the tests keep") is checked over the .sql
files by ``tests/test_conventions.py``. Installed from the frozen copy in
``sql/0022/``; backwards, 0021's copy again."""

from importlib import import_module

from django.db import migrations

install_sql_files = import_module(
    "annotation.migrations.0021_engine_sql_from_files"
).install_sql_files


class Migration(migrations.Migration):
    dependencies = [("annotation", "0021_engine_sql_from_files")]

    operations = [
        migrations.RunPython(
            install_sql_files("0022"), install_sql_files("0021"), elidable=False
        ),
    ]
