"""Benchmarks of the reference daemon against plain grpcio (`make bench`)."""
