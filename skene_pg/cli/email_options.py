"""Email options shared by `listen` and `templates preview`: the links in emails,
the templates folder, and the EmailSettings they make."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import click

log = logging.getLogger("skene_pg.worker")

OUTBOX_DEFAULT_SENDER = "skene-pg <noreply@localhost>"
OUTBOX_DEFAULT_APP_URL = "http://localhost:8000"


def templates_option(fn: Any) -> Any:
    return click.option(
        "--templates",
        "templates_dir",
        envvar="SKENE_TEMPLATES_DIR",
        show_envvar=True,
        metavar="DIR",
        type=click.Path(exists=True, file_okay=False, path_type=Path),
        help="Project templates that override the defaults.",
    )(fn)


def link_options(fn: Any) -> Any:
    fn = click.option(
        "--unsubscribe-url",
        envvar="SKENE_UNSUBSCRIBE_URL",
        show_envvar=True,
        metavar="URL",
        help="Unsubscribe link; may hold {customer_id} and {token} "
        "[default: APP_URL/unsubscribe?customer=..&token=..] "
        ".",
    )(fn)
    fn = click.option(
        "--upgrade-url",
        envvar="SKENE_UPGRADE_URL",
        show_envvar=True,
        metavar="URL",
        help="Upgrade link; may hold {customer_id}, {feature}, {plan} [default: APP_URL/upgrade].",
    )(fn)
    fn = click.option(
        "--app-url",
        envvar="SKENE_APP_URL",
        show_envvar=True,
        metavar="URL",
        help="Your app's base URL, for links in emails [required for resend and smtp].",
    )(fn)
    fn = click.option(
        "--email-from",
        envvar="SKENE_EMAIL_FROM",
        show_envvar=True,
        metavar="ADDRESS",
        help="Sender, e.g. 'Acme <hello@acme.com>' [required for resend and smtp].",
    )(fn)
    return fn


def email_settings(
    provider: str,
    email_from: str | None,
    app_url: str | None,
    upgrade_url: str | None,
    unsubscribe_url: str | None,
) -> Any:
    from skene_pg.email.base import ConfigError
    from skene_pg.email.handler import EmailSettings

    real = provider in ("resend", "smtp")
    if not email_from and real:
        raise ConfigError(
            f"SKENE_EMAIL_FROM is not set: the {provider} provider needs a "
            "sender (--email-from or SKENE_EMAIL_FROM), e.g. "
            "'Acme <hello@acme.com>'"
        )
    if not app_url and real:
        raise ConfigError(
            f"SKENE_APP_URL is not set: the {provider} provider needs your "
            "app's base URL for upgrade and unsubscribe links "
            "(--app-url or SKENE_APP_URL)"
        )
    secret = os.environ.get("SKENE_UNSUBSCRIBE_SECRET") or None
    if real and not secret:
        log.warning(
            "SKENE_UNSUBSCRIBE_SECRET is not set: unsubscribe links carry no token, "
            "so your endpoint cannot check who sent them"
        )
    return EmailSettings(
        sender=email_from or OUTBOX_DEFAULT_SENDER,
        app_url=app_url or OUTBOX_DEFAULT_APP_URL,
        upgrade_url=upgrade_url,
        unsubscribe_url=unsubscribe_url,
        unsubscribe_secret=secret,
    )


# The options `listen` and `doctor` share: doctor checks what listen would do with them.
listen_database_url_option = click.option(
    "--listen-database-url",
    envvar="SKENE_LISTEN_DATABASE_URL",
    show_envvar=True,
    metavar="URL",
    help="A direct connection (not through PgBouncer or another pooler) used only "
    "to LISTEN for new jobs; everything else goes through --database-url. Without "
    "it, a pooled --database-url means polling only (a warning says so).",
)
email_provider_option = click.option(
    "--email-provider",
    type=click.Choice(["resend", "smtp", "outbox"]),
    envvar="SKENE_EMAIL_PROVIDER",
    show_envvar=True,
    default="outbox",
    show_default=True,
    help="Where email goes. resend needs "
    "RESEND_API_KEY; smtp needs SKENE_SMTP_URL; outbox writes .eml files.",
)
outbox_dir_option = click.option(
    "--outbox-dir",
    envvar="SKENE_OUTBOX_DIR",
    show_envvar=True,
    default="outbox",
    show_default=True,
    metavar="DIR",
    help="Folder of the outbox provider.",
)
