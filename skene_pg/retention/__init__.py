"""Retention: scheduling retention loops (pg_cron or the worker), the report, the demo.

The loops themselves run in SQL (`skene.run_loop`, sql/0004_retention.up.sql); this
package only decides when, and shows what happened.
"""
