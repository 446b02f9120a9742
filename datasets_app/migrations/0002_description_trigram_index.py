"""A trigram index on Dataset.description, on PostgreSQL only, for POST /search's substring terms.

`description LIKE '%term%'` cannot use a b-tree; a GIN index with `gin_trgm_ops` serves it. The index
is not in the model's Meta (SQLite has no such index type), so the ORM does not know about it; on
SQLite this migration does nothing. Where `pg_trgm` cannot be installed (no privilege), the migration
warns and leaves search correct, only slower on large tables.
"""

import logging

from django.db import DatabaseError, migrations, transaction

logger = logging.getLogger(__name__)

INDEX = "datasets_app_dataset_description_trgm"


def create_trigram_index(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    table = apps.get_model("datasets_app", "Dataset")._meta.db_table
    try:
        with transaction.atomic(using=connection.alias):
            schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
            schema_editor.execute(
                f"CREATE INDEX IF NOT EXISTS {INDEX} ON {schema_editor.quote_name(table)} "
                "USING gin (description gin_trgm_ops)"
            )
    except DatabaseError as exc:
        logger.warning("No trigram index on dataset descriptions (%s); substring search will scan the table.", exc)


def drop_trigram_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    dependencies = [
        ("datasets_app", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(create_trigram_index, drop_trigram_index),
    ]
