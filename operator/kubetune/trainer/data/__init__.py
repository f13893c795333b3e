"""Dataset loading, validation, cleaning and splitting: pure Python, no torch."""

from kubetune.trainer.data.pipeline import DataReport, DataValidationError, PreparedData, prepare_dataset
from kubetune.trainer.data.records import Conversation, Issue, Message

__all__ = [
    "Conversation",
    "DataReport",
    "DataValidationError",
    "Issue",
    "Message",
    "PreparedData",
    "prepare_dataset",
]
