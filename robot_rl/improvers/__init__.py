"""Improvers: turn a pretrained chunk policy into a better one."""
