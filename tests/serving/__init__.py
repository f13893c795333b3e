"""ModelDeployment serving: resolution, gate, smoke test, status, real vLLM on CPU."""
