"""The error the pre-training helpers raise for input a user must fix before training can start."""


class PretrainingError(ValueError):
    """A problem with the pre-training input (entities file, corpus, output folder); the message says what to do."""


__all__ = ["PretrainingError"]
