"""When KeyCore's own services are down: which exceptions mean it, so that callers get 503, not 500.

A database that restarts refuses connections for a moment and ends the ones it
had ("terminating connection due to administrator command"); a broker that is
down refuses the task a change queues after it commits. Neither is a bug in the
request: the API answers ``503`` problem details with ``Retry-After``
(keycore/api/problems.py), the portals a 503 page (``keycore.views.server_error``),
and the Python client retries (keycore/client.py).

Only failures of the *connection* count: an integrity error or a syntax error is
still a bug, and still a 500.
"""

from __future__ import annotations

from django.db import InterfaceError, OperationalError
from kombu.exceptions import OperationalError as BrokerError

from keycore import errors

#: SQLSTATE classes that mean the server, not the statement: connection exception, insufficient
#: resources (too many connections), operator intervention (shutdown, restart, cancelled by the admin)
UNAVAILABLE_SQLSTATE_CLASSES = ("08", "53", "57")


def unavailable(exc: BaseException | None) -> errors.ServiceUnavailable | None:
    """The typed 503 error for ``exc`` if it means KeyCore's database or broker is unreachable, else None."""
    if isinstance(exc, BrokerError):
        return errors.BrokerUnavailable(
            "KeyCore's task broker is unavailable, so the background work of this request could not be queued. "
            "The change itself may have been saved: check before you repeat it."
        )
    if isinstance(exc, InterfaceError) or (isinstance(exc, OperationalError) and _server_side(exc)):
        return errors.DatabaseUnavailable(
            "KeyCore cannot reach its database right now (it may be restarting). Retry in a few seconds."
        )
    return None


def _server_side(exc: OperationalError) -> bool:
    # Django wraps the driver's error; psycopg's carries a SQLSTATE, a refused connection has none
    sqlstate = getattr(exc.__cause__, "sqlstate", None)
    return sqlstate is None or sqlstate[:2] in UNAVAILABLE_SQLSTATE_CLASSES
