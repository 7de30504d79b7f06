"""The HTTP routes, one module per resource; :data:`ROUTERS` is the order they are mounted (and documented) in."""

from avrec.serve.routers import dashboard, feedback, items, operations, recommend, search, users, web

ROUTERS = [recommend.router, search.router, items.router, users.router, feedback.router, operations.router,
           dashboard.router, web.router]

__all__ = ["ROUTERS"]
