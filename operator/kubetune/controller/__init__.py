"""The runtime around the reconcilers: queue, locks, requeues, watch cache, status writes and Events."""
