"""Email: providers (resend, smtp, outbox), templates, and the email job handler.

`make_provider` takes every setting as an argument: the CLI reads the environment and
passes values in, so nothing here reads it.
"""

from __future__ import annotations

from pathlib import Path

from skene_pg.email.base import ConfigError, Email, EmailProvider

PROVIDERS = ("resend", "smtp", "outbox")


def make_provider(
    name: str,
    *,
    resend_api_key: str | None = None,
    resend_api_url: str | None = None,
    smtp_url: str | None = None,
    outbox_dir: str | Path | None = None,
    rate_limit: float | None = None,
    timeout: float = 10.0,
) -> EmailProvider:
    """The provider called `name`; ConfigError naming the missing setting otherwise.
    rate_limit: requests/s (0 = off); None = the provider's default (2/s for resend)."""
    if name == "resend":
        from skene_pg.email.resend import DEFAULT_RATE_LIMIT, ResendProvider

        return ResendProvider(
            resend_api_key,
            api_url=resend_api_url,
            timeout=timeout,
            rate_limit=DEFAULT_RATE_LIMIT if rate_limit is None else rate_limit,
        )
    if name == "smtp":
        from skene_pg.email.smtp import SmtpProvider

        return SmtpProvider(smtp_url, timeout=timeout, rate_limit=rate_limit or 0.0)
    if name == "outbox":
        from skene_pg.email.outbox import OutboxProvider

        return OutboxProvider(outbox_dir)
    raise ConfigError(
        f"unknown email provider {name!r}: choose one of {', '.join(PROVIDERS)} "
        "(--email-provider / SKENE_EMAIL_PROVIDER)"
    )


__all__ = ["PROVIDERS", "ConfigError", "Email", "EmailProvider", "make_provider"]
