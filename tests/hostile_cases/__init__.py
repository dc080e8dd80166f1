"""The hostile-input table, by area: each module has ``CASES`` (a list of ``hostile.Case``) and ``setup(ws)``,
which adds the files its cases need to the shared workspace (a dict of name -> path; see tests/test_hostile.py).

``HOSTILE_AREA=cli`` (or training, config) runs one area's cases only, while working on them."""

import os

from hostile_cases import cli, config, training

AREAS = {"training": training, "cli": cli, "config": config}
_picked = [AREAS[a] for a in os.environ.get("HOSTILE_AREA", ",".join(AREAS)).split(",")]
CASES = [c for m in _picked for c in m.CASES]
SETUPS = [m.setup for m in _picked]
