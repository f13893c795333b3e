"""PURE planners: a pass's typed context in, a typed plan out (what to apply, delete, report, and when
to look again). No I/O, no env reads, no clock (`now` is passed in)."""
