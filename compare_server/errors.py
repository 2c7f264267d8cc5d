"""Domain errors of the compare server. The gRPC layer maps each to a status code."""


class CmpError(Exception):
    """Base class: the message is shown to the user as it is, so it says what to do."""


class NotFound(CmpError):
    """An unknown run, or a prefix that matches no run."""


class Ambiguous(CmpError):
    """A run-id prefix that matches several runs."""


class InvalidInput(CmpError):
    """A request that can never succeed as sent: a bad record, a wrong digest, a bad threshold."""


class Conflict(CmpError):
    """A request at odds with what is stored: a record sent twice, an upload to a closed run."""


class DuplicateRecord(Conflict):
    """A record index the run already holds."""


class TooLarge(CmpError):
    """A message or run over the server's size limits."""


class CannotCompare(CmpError):
    """Two runs that must not be diffed: other prompts, other kinds, or not complete."""


class SchemaOutOfDate(CmpError):
    """The database was made by an older cmp and needs `cmp db upgrade`."""
