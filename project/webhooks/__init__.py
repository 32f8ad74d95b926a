"""Signed webhooks (Standard Webhooks): endpoints staff register, events apps emit, deliveries a worker makes."""
