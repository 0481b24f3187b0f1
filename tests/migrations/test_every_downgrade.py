"""Every revision's downgrade gives back exactly the schema the revision before it
left: function bodies, grants, comments, triggers and indexes (a pg_dump of the skene
schema, compared step by step)."""

from __future__ import annotations

from skene_pg import migrations, schema_files
from skene_pg.devdb import DevCluster
from tests.migrations.test_migrations import empty_db as empty_db  # the fixture


def test_each_downgrade_restores_the_schema_before_it(
    pg_cluster: DevCluster, db_url: str, empty_db: str
) -> None:
    chain = migrations.revisions()
    assert len(chain) >= 2
    # the schema at each revision, reached going up
    dumps = {}
    for revision in chain:
        migrations.upgrade(empty_db, revision)
        dumps[revision] = schema_files.dump_schema(empty_db)
    # the test's database is at head: go down one revision at a time
    assert migrations.current_revision(db_url) == chain[-1]
    for newer, older in zip(reversed(chain), reversed(chain[:-1]), strict=False):
        migrations.downgrade(db_url, older)
        assert migrations.current_revision(db_url) == older
        assert schema_files.dump_schema(db_url) == dumps[older], (
            f"downgrading {newer} did not restore the schema {older} left"
        )
