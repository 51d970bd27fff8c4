"""Providers: each one's wire format behind the interface of router/providers/base.py."""
