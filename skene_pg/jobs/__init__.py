"""The generic job runtime: the queue protocol (protocol), what a job kind provides
(kinds), the worker that claims, dispatches and finishes jobs (worker), and the
operators' views (admin). It knows no feature: email, billing and retention
register their handlers and periodic tasks with it."""
