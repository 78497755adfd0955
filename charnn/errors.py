"""The one error type charnn reports to users: a single line saying what is wrong and what to do."""


class CharnnError(Exception):
    """A problem with the user's input or files, reported as one line without a traceback."""
