"""kubetune: fine-tune LLMs and serve them behind metric-gated canaries, on Kubernetes."""
