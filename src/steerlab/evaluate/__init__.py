"""Evaluation measures: refusal scores and phrases, KL, cross-entropy, intervals."""
