"""Survey simulator: GalSim scenes rendered into real-format CFHT MegaPrime raw files.

``simulate(preset_or_config, out_dir)`` writes raw science and calibration MEFs, a
photometric reference catalog and truth tables; ``plan_survey`` gives the same plan
without pixels (for tests and for rendering a single CCD).
"""

from coadd_core.sim.config import PRESETS, SimConfig, get_preset
from coadd_core.sim.render import RenderOptions, render_ccd, render_electrons
from coadd_core.sim.survey import TRUTH_FILES, SimulationResult, SurveyPlan, plan_survey, simulate

__all__ = [
    "PRESETS",
    "SimConfig",
    "get_preset",
    "simulate",
    "plan_survey",
    "SimulationResult",
    "SurveyPlan",
    "RenderOptions",
    "render_ccd",
    "render_electrons",
    "TRUTH_FILES",
]
