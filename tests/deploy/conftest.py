"""Deploy tests reuse the testbed fixtures: a private CNLAB_STATE_DIR and the real `cnlab` CLI."""

from ..testbed.conftest import cli, state_dir  # noqa: F401 - fixtures
