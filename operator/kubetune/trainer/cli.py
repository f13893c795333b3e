"""Command line: `python -m kubetune.trainer validate|stage|train --config PATH`.

Exit codes follow kubetune.api.trainingconfig: 0 success, 40 config error, 41 data error (both fatal
for the Job's podFailurePolicy), anything else is retried.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from kubetune.api.finetunejob import Lineage
from kubetune.api.trainingconfig import CONFIG_DIR, CONFIG_FILE, EXIT_OK, TrainerResult, TrainingConfig
from kubetune.trainer.config import Topology, load_config, termination_log_path
from kubetune.trainer.errors import TrainerError
from kubetune.trainer.result import write_result

log = logging.getLogger("kubetune.trainer")

EXIT_UNEXPECTED = 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m kubetune.trainer", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    helps = {
        "validate": "check the dataset (file:line: field: problem for every bad record) and exit",
        "stage": "download hf:// and s3:// inputs to the local paths of the config",
        "train": "validate, fine-tune (resuming from the latest checkpoint), evaluate and export",
    }
    commands.add_parser(
        "launch",
        help="run `-- torchrun ...` and keep the contract exit codes torchrun would hide",
        description="launch -- <launcher command>: exit 40/41 when a failed worker recorded "
        "ConfigError/InvalidData",
    )
    for name, text in helps.items():
        command = commands.add_parser(name, help=text, description=text)
        command.add_argument(
            "--config", type=Path, default=Path(CONFIG_DIR) / CONFIG_FILE, help="rendered TrainingConfig JSON"
        )
        command.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def _run(command: str, config: TrainingConfig, config_path: Path, topology: Topology) -> TrainerResult:
    if command == "validate":
        from kubetune.trainer.validate import validate

        prepared = validate(config)
        # The digest lets a FineTuneSchedule's probe tell unchanged data from new data (pvc/s3/hf).
        return TrainerResult(
            outcome="Succeeded",
            message=prepared.report.summary(),
            lineage=Lineage(dataset_digest="sha256:" + prepared.report.sha256),
        )
    if command == "stage":
        from kubetune.trainer.stage import stage

        stage(config)
        return TrainerResult(outcome="Succeeded", message="inputs staged")
    from kubetune.trainer.progress import build_reporter
    from kubetune.trainer.train import run_training

    reporter = build_reporter(config.progress, topology.rank)
    try:
        return run_training(config, config_path, reporter)
    finally:
        reporter.close()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["launch"]:
        from kubetune.trainer.launch import launch

        return launch(argv[2:] if argv[1:2] == ["--"] else argv[1:])
    args = _parser().parse_args(argv)
    topology = Topology.from_env()
    logging.basicConfig(
        level=args.log_level,
        format=f"%(asctime)s rank{topology.rank} %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = load_config(args.config)
        result = _run(args.command, config, args.config, topology)
    except TrainerError as exc:
        log.error("%s failed (%s): %s", args.command, exc.reason, exc)
        # One writer per container: torchrun's local rank 0 (each pod has its own termination log).
        if topology.is_local_main:
            write_result(
                termination_log_path(), TrainerResult(outcome="Failed", reason=exc.reason, message=str(exc))
            )
        return exc.exit_code
    except Exception as exc:
        log.exception("%s failed unexpectedly", args.command)
        if topology.is_local_main:
            write_result(
                termination_log_path(),
                TrainerResult(
                    outcome="Failed", reason="TrainingFailed", message=f"{type(exc).__name__}: {exc}"
                ),
            )
        return EXIT_UNEXPECTED
    if topology.is_main:
        write_result(termination_log_path(), result)
    log.info("%s succeeded: %s", args.command, result.message)
    return EXIT_OK
