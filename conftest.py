"""Running pytest in this repository loads the suite's plugin, as the
`choo-conformance` runner does for an installed suite."""

pytest_plugins = ["choo_conformance.plugin"]
