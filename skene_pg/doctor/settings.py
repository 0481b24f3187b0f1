"""The settings checks of `skene-pg doctor`: what `skene-pg listen` would run with
(`ListenSettings`: its options and the secrets it reads from the environment), whether
its email provider would start and how it sends, and whether Stripe is set up for
what the catalogue uses. No secret's value is ever printed."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass

import psycopg

from skene_pg.doctor.common import Finding, one_row


@dataclass(frozen=True)
class ListenSettings:
    """What `skene-pg listen` would run with: its options (from the command line or
    their environment variables) and the secrets it reads from the environment only."""

    email_provider: str = "outbox"
    email_from: str | None = None
    app_url: str | None = None
    upgrade_url: str | None = None
    unsubscribe_url: str | None = None
    outbox_dir: str = "outbox"
    listen_database_url: str | None = None
    # what listen's own check of sender and links said (cli/email_options.email_settings)
    links_error: str | None = None


def check_email(listen: ListenSettings, environ: Mapping[str, str]) -> list[Finding]:
    from skene_pg.email import make_provider
    from skene_pg.email.base import ConfigError

    provider_name = listen.email_provider
    try:
        provider = make_provider(
            provider_name,
            resend_api_key=environ.get("RESEND_API_KEY"),
            resend_api_url=environ.get("RESEND_API_URL"),
            smtp_url=environ.get("SKENE_SMTP_URL"),
            outbox_dir=listen.outbox_dir,
        )
        provider.close()
        if listen.links_error:
            raise ConfigError(listen.links_error)
    except ConfigError as exc:
        return [
            Finding(
                "email",
                "blocker",
                f"skene-pg listen would not start: {exc}",
                _email_fix(provider_name),
            )
        ]
    findings = []
    if provider_name == "outbox":
        findings.append(
            Finding(
                "email",
                "warning",
                f"provider outbox: emails are written to {listen.outbox_dir}/ as .eml "
                "files, not sent",
                ("SKENE_EMAIL_PROVIDER=resend   # or smtp",),
            )
        )
    else:
        detail = "RESEND_API_KEY set" if provider_name == "resend" else _smtp_detail(environ)
        findings.append(
            Finding(
                "email",
                "ok",
                f"provider {provider_name} ({detail}); sender {listen.email_from}; "
                f"app URL {listen.app_url}",
            )
        )
        if not environ.get("SKENE_UNSUBSCRIBE_SECRET"):
            findings.append(
                Finding(
                    "email",
                    "warning",
                    "SKENE_UNSUBSCRIBE_SECRET is not set: unsubscribe links carry no "
                    "token, so your endpoint cannot check who sent them",
                    ("SKENE_UNSUBSCRIBE_SECRET=<a long random string>",),
                )
            )
    if provider_name == "resend" and not environ.get("RESEND_WEBHOOK_SECRET"):
        findings.append(
            Finding(
                "email",
                "warning",
                "RESEND_WEBHOOK_SECRET is not set: bounces and complaints from Resend "
                "are not received, so those addresses keep getting email",
                ("RESEND_WEBHOOK_SECRET=whsec_...   # and skene-pg listen --http",),
            )
        )
    return findings


def _email_fix(provider: str) -> tuple[str, ...]:
    if provider == "resend":
        return (
            "RESEND_API_KEY=re_...",
            "SKENE_EMAIL_FROM='Acme <hello@acme.com>'",
            "SKENE_APP_URL=https://app.acme.com",
        )
    if provider == "smtp":
        return (
            "SKENE_SMTP_URL=smtp://user:password@mail.example.com:587",
            "SKENE_EMAIL_FROM='Acme <hello@acme.com>'",
            "SKENE_APP_URL=https://app.acme.com",
        )
    return ("SKENE_EMAIL_PROVIDER=resend|smtp|outbox",)


def _smtp_detail(environ: Mapping[str, str]) -> str:
    from skene_pg.email.smtp import SmtpSettings

    settings = SmtpSettings.from_url(environ.get("SKENE_SMTP_URL"))
    login = "with a login" if settings.username else "without a login"
    return f"{settings.host}:{settings.port}, {login}"  # never the password


def check_stripe(
    conn: psycopg.Connection, environ: Mapping[str, str], *, installed: bool
) -> list[Finding]:
    prices = metered = 0
    if installed:
        with contextlib.suppress(psycopg.Error):
            prices, metered = one_row(
                conn,
                "SELECT (SELECT count(*) FROM skene.plan_prices), "
                "(SELECT count(*) FROM skene.features WHERE meter IS NOT NULL)",
            )
    uses = []
    if prices:
        uses.append(f"{prices} Stripe price(s) mapped to plans")
    if metered:
        uses.append(f"{metered} metered feature(s)")
    if not environ.get("STRIPE_API_KEY"):
        if uses:
            return [
                Finding(
                    "stripe",
                    "warning",
                    f"STRIPE_API_KEY is not set, yet the catalogue has {' and '.join(uses)}: "
                    "plans are not synced from Stripe and usage is not reported",
                    ("STRIPE_API_KEY=sk_...", "STRIPE_WEBHOOK_SECRET=whsec_..."),
                )
            ]
        return [Finding("stripe", "ok", "Stripe is off (no STRIPE_API_KEY, nothing uses it)")]
    if not environ.get("STRIPE_WEBHOOK_SECRET"):
        return [
            Finding(
                "stripe",
                "warning",
                "STRIPE_API_KEY is set but STRIPE_WEBHOOK_SECRET is not: listen --http "
                "cannot verify Stripe's webhooks, so plans change only on "
                "`skene-pg billing reconcile`",
                ("STRIPE_WEBHOOK_SECRET=whsec_...   # and skene-pg listen --http",),
            )
        ]
    return [Finding("stripe", "ok", "STRIPE_API_KEY and STRIPE_WEBHOOK_SECRET are set")]
