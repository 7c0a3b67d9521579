"""A local stand-in for github.com and api.github.com, for tests and the offline demo.

One HTTP server serves both hosts:

- Git smart HTTP (clone, fetch, push) of bare repositories under ``root_dir``, through the real
  ``git http-backend`` run as CGI; requests need the token (Basic with the token as password or
  user, or Bearer) or get 401 like GitHub.
- The REST subset bgagent uses, with GitHub's JSON shapes and status codes: repositories, pull
  requests (422 on a second open PR for one head), reviews, issue comments (PATCH 404 once
  deleted; 400 for conditional headers on unsafe requests).
- Test controls in Python (``FakeGitHub.create_repo``, ``create_issue``, ``state``, ``inject``,
  ``request_counts``…) and the same over HTTP under ``/_admin/`` for the process mode
  (``python -m bgagent_testing.fake_github --port P --root DIR --token T``).
"""

from .rest import Fault
from .server import FakeGitHub

__all__ = ["FakeGitHub", "Fault"]
