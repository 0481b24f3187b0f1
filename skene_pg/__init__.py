"""skene-pg: SaaS growth loops (usage limits, upgrade prompts, plan sync, retention)
inside the application's own PostgreSQL database."""

__version__ = "0.1.0"
