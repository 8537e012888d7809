"""The domain of Provisor: every state change of services, operations and tasks is here.

Views, API handlers, CLI commands and actors parse input and call these functions; the
functions never touch ``flask.request``.
"""
