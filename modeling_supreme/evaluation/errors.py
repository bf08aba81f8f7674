"""The error every evaluation function raises for bad input."""


class EvaluationError(ValueError):
    """Bad evaluation input (prompts, checkpoint, dataset, split); the message says what to fix."""


__all__ = ["EvaluationError"]
