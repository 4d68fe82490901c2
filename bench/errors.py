"""Errors a user can act on. The CLI turns `BenchError` into exit code 2 with its message."""


class BenchError(Exception):
    """A problem with the user's input (setting, file, name); message says what and the valid choices."""


class UnknownChoiceError(BenchError):
    def __init__(self, kind: str, name: str, choices):
        import difflib

        choices = sorted(str(c) for c in choices)
        close = difflib.get_close_matches(str(name), choices, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        super().__init__(f"unknown {kind} {name!r}{hint}; valid choices: {', '.join(choices)}")
        self.kind, self.name, self.choices = kind, name, choices


class DataFileError(BenchError):
    """A data file that cannot be read: names the file, the column and (when known) the line."""

    def __init__(self, path, message: str, column: str | None = None, line: int | None = None):
        where = str(path)
        if column is not None:
            where += f", column {column!r}"
        if line is not None:
            where += f", line {line}"
        super().__init__(f"{where}: {message}")
