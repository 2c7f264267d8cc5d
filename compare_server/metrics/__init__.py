"""Cross-device metrics: pure numpy functions, no I/O. See DESIGN.md "Metrics"."""

# Bump when any metric's definition changes: cached diffs of an older version are recomputed.
METRICS_VERSION = 3
