"""The ``nerfexport`` command line."""
