"""The pose-scoring engine shared by ab initio, refinement and annealing."""
