"""Rules every command line of the project shares (issue 21): a user error is one line on stderr,
``error: ...``, exit status 2, found before any work, so a refused run creates nothing."""
import argparse
import os
import sys

USER_ERROR = 2


def fail(message):
    """Print ``message`` as the one ``error:`` line (newlines folded) -> the user-error exit status."""
    print("error: " + " ".join(str(message).split()), file=sys.stderr, flush=True)
    return USER_ERROR


def folder_problem(path, option):
    """Why the local folder ``path`` (given as ``option``) cannot be created or written; None when it can.
    URLs (``azfs://``, ``gs://``) are not checked here. Nothing is created."""
    if not path or "://" in path:
        return None
    full = os.path.abspath(path)
    if os.path.exists(full) and not os.path.isdir(full):
        return f"{option} {path} is a file, not a folder"
    existing = full
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return f"{option} {path}: {existing} is a file, so no folder can be made under it"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{option} {path}: no permission to write in {existing}"
    return None


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors (an unknown option, a bad value, a missing one) are one line, exit 2: not
    the usage block followed by the message. ``--help`` is unchanged."""

    def error(self, message):
        self.exit(USER_ERROR, f"error: {message} ({self.prog} --help lists the options)\n")
