"""The HF Trainer callback that counts tokens and feeds the progress reporter (rank 0 reports)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from kubetune.trainer.progress import ProgressReporter, ProgressUpdate, ThrottledReporter, now_utc
from kubetune.trainer.throughput import mfu


@dataclass(frozen=True)
class Throughput:
    """What MFU needs besides tokens/s: FLOPs per token, and the peak of all GPUs (None: no MFU)."""

    flops_per_token: float
    peak_flops: float | None = None


def sum_across_ranks(value: int) -> int:
    """The sum of `value` over the torch.distributed group (the value itself when not distributed)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    on_gpu = dist.get_backend() == "nccl"
    device = torch.device("cuda", torch.cuda.current_device()) if on_gpu else torch.device("cpu")
    tensor = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(tensor)
    return int(tensor.item())


class ProgressCallback(TrainerCallback):
    """Turns Trainer logs into progress updates; also keeps the loss history for metrics.json.

    Tokens: `tokens_served` counts this rank's tokens as the dataset hands them out; at each log (which
    every rank reaches together) the new ones are summed over ranks once into `state.num_input_tokens_seen`
    (saved in checkpoints, so a resumed run keeps counting). Without `tokens_served` the Trainer's own
    count is used.
    """

    def __init__(
        self,
        reporter: ProgressReporter,
        clock: Callable[[], float] = time.monotonic,
        *,
        tokens_served: Callable[[], int] | None = None,
        throughput: Throughput | None = None,
        sum_ranks: Callable[[int], int] = sum_across_ranks,
    ) -> None:
        self.reporter = reporter
        self.clock = clock
        self.tokens_served = tokens_served
        self.throughput = throughput
        self.sum_ranks = sum_ranks
        self.loss_history: list[tuple[int, float]] = []
        self._served_counted = 0
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
        if self.tokens_served is not None:
            self._served_counted = self.tokens_served()

    def _count_tokens(self, state: TrainerState) -> None:
        if self.tokens_served is None:
            return
        served = self.tokens_served()
        state.num_input_tokens_seen += self.sum_ranks(served - self._served_counted)
        self._served_counted = served

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if logs and "loss" in logs:
            self._count_tokens(state)  # every rank: a collective when distributed
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
        self._count_tokens(state)
        if not state.is_world_process_zero:
            return
        self.reporter.report(self._update(state))
        if isinstance(self.reporter, ThrottledReporter):
            self.reporter.flush()

    def _mfu(self) -> float | None:
        if not self._tokens_per_second or self.throughput is None or not self.throughput.peak_flops:
            return None
        return round(
            mfu(self._tokens_per_second, self.throughput.flops_per_token, self.throughput.peak_flops), 4
        )

    def _update(self, state: TrainerState) -> ProgressUpdate:
        return ProgressUpdate(
            step=state.global_step,
            total_steps=state.max_steps or None,
            epoch=round(state.epoch, 4) if state.epoch is not None else None,
            loss=self._loss,
            eval_loss=self._eval_loss,
            learning_rate=self._learning_rate,
            tokens_per_second=round(self._tokens_per_second, 2) if self._tokens_per_second else None,
            mfu=self._mfu(),
            updated_at=now_utc(),
        )
