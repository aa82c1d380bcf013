"""Benchmarks of the functions: each one a ratio against a floor measured in the same run.

Run everything with `python -m bench` (add `--quick` for a short smoke run, `--only NAME` for one
benchmark). Every benchmark starts its own throwaway embedded Postgres, migrates it, and removes it.
"""
