"""The one exception type for a user's mistake. Library code raises it with a message that names the
file, line, field or value and says what to do; the command-line entry points (cli.run_cli) print it as
one line and exit 2.
"""


class UserError(Exception):
    """A mistake in the user's input (a file, a line, a value): the message says what and what to do."""
