"""The error raised when a day partition does not match its schema."""


class DataValidationError(ValueError):
    """Bad input data: `file` and `column` name where (None when not tied to one)."""

    def __init__(self, message, file=None, column=None):
        self.file = None if file is None else str(file)
        self.column = column
        where = []
        if self.file is not None:
            where.append(f"file {self.file}")
        if column is not None:
            where.append(f"column {column!r}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)
