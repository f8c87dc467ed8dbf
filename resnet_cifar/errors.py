"""The one exception type for problems a user can fix (bad option, bad file, no space)."""


class UserError(Exception):
    """A problem with the user's input or environment.

    main() prints its message as one line on stderr and exits with code 2; it is never
    shown as a traceback. The message is one line wherever it is shown (the command line or
    Python): line breaks in the user's own values (a path, a name) appear as \\n.
    """

    def __init__(self, message: str):
        super().__init__(str(message).replace("\r", "\\r").replace("\n", "\\n"))
