"""Billing: Stripe webhooks into the inbox, plan sync by re-fetch, metered usage to
Stripe Billing Meters, Resend bounces into the suppression list."""
