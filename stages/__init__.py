"""The nine DVC stages, one module each; `dvc.yaml` runs them as `python -m stages.NAME`."""
