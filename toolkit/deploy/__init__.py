"""Deploying nodes onto devices: the federation plan and its deployers."""
