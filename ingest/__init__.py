"""Ingest: real dataset layouts, synthetic data in those layouts, and Ray Data decoding.

Data flows one way: ingest -> models -> jobs -> serve. Nothing here imports jobs or serve.
"""
