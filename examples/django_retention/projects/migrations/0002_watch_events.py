from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("projects", "0001_initial"), ("skene_pg", "0001_skene_schema")]
    operations = [
        migrations.RunSQL(
            "SELECT skene.watch_activity('public.projects_event', 'customer_id', 'created_at')",
            "SELECT skene.unwatch_activity('public.projects_event')",
        )
    ]
