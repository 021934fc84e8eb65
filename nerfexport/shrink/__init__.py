"""Shrinking: calibration samples, neuron scoring, distillation, recipes, the shrink pipeline. Needs torch."""
