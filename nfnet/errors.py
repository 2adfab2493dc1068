"""`UserError`: a mistake the user can fix (a config value, a path, weights that
do not fit), as opposed to a bug.

The programs print a `UserError` as one `error: ...` line and exit 1; any
other exception keeps its traceback. It subclasses ValueError so that callers
catching ValueError (and tests written against it) keep working.
"""


class UserError(ValueError):
  """Something the user asked for that cannot be done; the message says why
  and what to change."""


class WeightImportError(UserError):
  """A weight file that cannot be read, or does not match the model."""
