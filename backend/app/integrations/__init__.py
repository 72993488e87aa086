"""Clients for the outside services this integration talks to."""
