"""`skene-pg init`: read an app's database (and, given its folder, its routes) and
propose a commented skene.toml. `catalogue` reads the tables, `recognise` guesses the
users, subscriptions, events and counted tables, `routes` finds API routes in Django,
FastAPI and Next.js code, `render` writes the file with every guess explained."""

from skene_pg.proposal.render import NothingToPropose, Proposal, propose

__all__ = ["NothingToPropose", "Proposal", "propose"]
