"""Interatomic potentials built from equitensor's public pieces (MACE, TensorNet): not implemented yet."""
