"""The skene schema, up to revision 0009 (see skene_pg/django/schema.py)."""

from django.db import migrations

from skene_pg.django.schema import UpgradeSkene


class Migration(migrations.Migration):
    initial = True
    dependencies: list[tuple[str, str]] = []
    operations = [UpgradeSkene()]

    skene_revision = "0009"  # the newest skene revision when this migration was added
