"""The one base class of errors a user can fix (bad spec, data, results, a busy experiment).

Every command prints such an error as its message alone and exits with status 2; anything
else is a bug and keeps its traceback. Each layer derives its own errors from it.
"""


class UserError(Exception):
    """Something the user can fix; the message says what and where."""
