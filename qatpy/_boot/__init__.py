"""The directory `python -m qatpy run` puts first on PYTHONPATH (its sitecustomize installs qatpy.ssl)."""
