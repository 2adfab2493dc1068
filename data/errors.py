"""`DataError`: a mistake in the data options or files that the user can fix
(a source string, a missing split, a corrupt record), as opposed to a bug.

Command lines print it as one `error: ...` line. It subclasses ValueError so
that callers catching ValueError keep working.
"""


class DataError(ValueError):
  """Data that cannot be read as asked; the message says why and what to do."""
