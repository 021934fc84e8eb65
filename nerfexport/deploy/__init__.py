"""The deploy side: bundle manifest and reading, occupancy bits, rays, the lean renderer, runtimes.

Nothing here imports torch or the train, shrink or export stages (a test checks the import graph)."""
