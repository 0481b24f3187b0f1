"""The skene schema, up to revision 0010 (the app's own tables as sources)."""

from django.db import migrations

from skene_pg.django.schema import UpgradeSkene


class Migration(migrations.Migration):
    dependencies = [("skene_pg", "0001_skene_schema")]
    operations = [UpgradeSkene()]

    skene_revision = "0010"  # the newest skene revision when this migration was added
