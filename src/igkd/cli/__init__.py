"""The igkd command line."""
