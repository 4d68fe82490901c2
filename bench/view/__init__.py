"""The static results site (`python -m bench view`): `build_site(results_dir, out_dir, suites)`."""

from bench.view.site import build_site, check_inputs

__all__ = ["build_site", "check_inputs"]
