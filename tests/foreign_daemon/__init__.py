"""A second implementation of choo.v1.DaemonService, written apart from the
reference daemon, against which the conformance suite is judged. Run it with
server.py; README.md says what it decides differently and why."""
