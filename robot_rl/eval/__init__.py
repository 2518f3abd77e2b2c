"""Evaluation: success rates with confidence intervals, videos and plots."""
