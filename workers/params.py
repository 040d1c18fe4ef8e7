"""The parameters of the fleet's ``chat`` namespace (``workers.params:ChatParams``).

They are :mod:`hotparams.demo.params`, shipped in the package with the
demo's chat worker; the web app and the chat workers import this one model.
"""

from hotparams.demo.params import CONNECTION_FIELDS, NAMESPACE, ChatParams, in_quiet_hours

__all__ = ["CONNECTION_FIELDS", "NAMESPACE", "ChatParams", "in_quiet_hours"]
