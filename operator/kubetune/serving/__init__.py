"""Serving logic shared by the reconciler: model resolution, eval gate, smoke test, vLLM metric names.

Pure except `smoke.run_smoke_test` (HTTP to a variant) and `stage` (the init container's download).
"""
