"""The skene schema, up to revision 0005 (see skene_pg/django/schema.py)."""

from django.db import migrations

from skene_pg.django.schema import UpgradeSkene


class Migration(migrations.Migration):
    initial = True
    dependencies: list[tuple[str, str]] = []  # noqa: RUF012  (Django reads it as is)
    operations = [UpgradeSkene()]  # noqa: RUF012

    skene_revision = "0005"  # the newest skene revision when this migration was added
