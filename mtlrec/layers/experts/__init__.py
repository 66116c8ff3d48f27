"""Experts and the gates that mix them: Expert, Gate, DSelectKGate, MixtureOfExperts (MMoE) and CGC (PLE)."""
