"""Local control planes for tests and `make dev`, from binaries built from pinned Go modules."""
