"""The HF Trainer callback that feeds the progress reporter (rank 0 only)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from kubetune.trainer.progress import ProgressReporter, ProgressUpdate, ThrottledReporter, now_utc


class ProgressCallback(TrainerCallback):
    """Turns Trainer logs into progress updates; also keeps the loss history for metrics.json."""

    def __init__(self, reporter: ProgressReporter, clock: Callable[[], float] = time.monotonic) -> None:
        self.reporter = reporter
        self.clock = clock
        self.loss_history: list[tuple[int, float]] = []
        self._last_time = 0.0
        self._last_tokens = 0
        self._loss: float | None = None
        self._eval_loss: float | None = None
        self._learning_rate: float | None = None
        self._tokens_per_second: float | None = None

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._last_time = self.clock()
        self._last_tokens = state.num_input_tokens_seen

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if not state.is_world_process_zero or not logs:
            return
        if "loss" in logs:
            self._loss = float(logs["loss"])
            self.loss_history.append((state.global_step, self._loss))
            now = self.clock()
            elapsed = now - self._last_time
            if elapsed > 0 and state.num_input_tokens_seen > self._last_tokens:
                self._tokens_per_second = (state.num_input_tokens_seen - self._last_tokens) / elapsed
            self._last_time, self._last_tokens = now, state.num_input_tokens_seen
        if "eval_loss" in logs:
            self._eval_loss = float(logs["eval_loss"])
        if "learning_rate" in logs:
            self._learning_rate = float(logs["learning_rate"])
        if "loss" in logs or "eval_loss" in logs:
            self.reporter.report(self._update(state))

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if not state.is_world_process_zero:
            return
        self.reporter.report(self._update(state))
        if isinstance(self.reporter, ThrottledReporter):
            self.reporter.flush()

    def _update(self, state: TrainerState) -> ProgressUpdate:
        return ProgressUpdate(
            step=state.global_step,
            total_steps=state.max_steps or None,
            epoch=round(state.epoch, 4) if state.epoch is not None else None,
            loss=self._loss,
            eval_loss=self._eval_loss,
            learning_rate=self._learning_rate,
            tokens_per_second=round(self._tokens_per_second, 2) if self._tokens_per_second else None,
            updated_at=now_utc(),
        )
