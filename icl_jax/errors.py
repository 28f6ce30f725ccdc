"""The one exception type users see: a problem they can fix, with the fix in the message."""


class UserError(ValueError):
  """Bad config, missing dataset, incompatible workdir, NaN loss, ...

  Entry points catch it and print its message alone (no traceback), then exit non-zero.
  The message must name the problem and say what to do about it.
  """
