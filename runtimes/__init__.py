"""Runtime definitions (TOML), shipped with the package; see runtimes/README.md."""
