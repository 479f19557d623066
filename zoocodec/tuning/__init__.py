"""Tuning: choices made by measuring, above `pipeline` (compress) and `eval` (tasks).

- sensitivity: how much a task's output moves per unit of squared error in each tensor;
- allocate: per-tensor steps at one Lagrangian slope, sized by the coders' entropy models;
- auto: the smallest file within a task-metric loss budget (`compress --target-loss`).

pipeline and eval never import this package; it imports both.
"""
