"""The exceptions users see: a problem with their input, said in one line with the fix; and a polite termination."""


class DVDError(Exception):
    """Bad input, missing files or an impossible request. The CLI prints the message alone and exits with code 2."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread by `dvd.cli` so that it unwinds like Ctrl-C: every `except BaseException`
    cleanup (staging folders, temporary files) runs, and the CLI exits with 143 (128 + SIGTERM)."""
