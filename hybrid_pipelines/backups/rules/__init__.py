"""Pure backup rules: labels, retention, comparisons. No Dagster, no I/O."""
