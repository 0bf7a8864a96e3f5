#!/bin/sh
# The daemon under test, its coding agent pointed at a no-op stub, as the
# conformance suite starts it: --server-cmd "$PWD/examples/agent-stub-daemon.sh {socket} {db}".
# Here the foreign daemon in its --like-choo mode, whose agent is the command
# in CHOO_AGENT_CMD (the runner's --server-env CHOO_AGENT_CMD=true: `true` is
# the stub). For choo's own daemon, point its provider at a stub here and
# start it on the same two paths.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
exec "$root/.venv/bin/python" "$root/tests/foreign_daemon/server.py" \
    --socket "$1" --db "$2" --no-control --like-choo
