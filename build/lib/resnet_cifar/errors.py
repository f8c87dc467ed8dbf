"""The one exception type for problems a user can fix (bad option, bad file, no space)."""


class UserError(Exception):
    """A problem with the user's input or environment.

    main() prints its message as one line on stderr and exits with code 2; it is never
    shown as a traceback.
    """
