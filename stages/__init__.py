"""The pipeline stages: one module per DVC stage, plus the small modules they share."""
