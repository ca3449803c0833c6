"""The one exception type users see: a problem with their input, said in one line with the fix."""


class DVDError(Exception):
    """Bad input, missing files or an impossible request. The CLI prints the message alone and exits with code 2."""
