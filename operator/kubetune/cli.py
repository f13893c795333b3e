"""`kubetune` command line: the operator, CRD generation, the local dev cluster."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys


def _operator(args: argparse.Namespace) -> int:
    import kopf

    import kubetune.handlers  # noqa: F401  (registers the handlers)

    if args.metrics_port:
        os.environ["KUBETUNE_METRICS_PORT"] = str(args.metrics_port)
    # kopf.configure puts one handler on the root logger for kopf's and our loggers alike; a second
    # (logging.basicConfig) printed every line twice in the pod's log.
    kopf.configure(verbose=args.verbose)
    asyncio.run(
        kopf.operator(
            standalone=True,
            clusterwide=not args.namespace,
            namespaces=args.namespace or (),
            liveness_endpoint=args.liveness,
            # kopf's default identity calls getpass.getuser(), which raises for a uid without a passwd
            # entry: the image's non-root 65532, or any uid OpenShift picks (Identity is a NewType of str).
            identity=f"{socket.gethostname()}@{os.getpid()}",  # type: ignore[arg-type]
        )
    )
    return 0


def _crds(args: argparse.Namespace) -> int:
    from kubetune import crdgen

    return crdgen.main([str(p) for p in args.out])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kubetune", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    op = commands.add_parser("operator", help="run the operator against the current kubeconfig")
    op.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="watch only this namespace (repeatable); default: cluster-wide",
    )
    op.add_argument(
        "--liveness",
        default=os.environ.get("KUBETUNE_LIVENESS", "http://0.0.0.0:8080/healthz"),
        help="kopf health endpoint URL (default %(default)s)",
    )
    op.add_argument(
        "--metrics-port",
        type=int,
        default=int(os.environ.get("KUBETUNE_METRICS_PORT", "9090")),
        help="Prometheus metrics port; 0 disables (default %(default)s)",
    )
    op.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    op.set_defaults(func=_operator)

    crds = commands.add_parser("crds", help="write the CRDs generated from the API models")
    crds.add_argument("out", nargs="+", help="output directories")
    crds.set_defaults(func=_crds)

    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
