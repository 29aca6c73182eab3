from .flow_euler import (SAMPLERS, FlowEulerCfgSampler, FlowEulerGuidanceIntervalSampler, FlowEulerSampler,
                         SamplerOutput, time_grid)
from .flow_heun import (HEUN_SAMPLERS, SOLVERS, FlowHeunCfgSampler, FlowHeunGuidanceIntervalSampler, FlowHeunSampler,
                        heun_counterpart, velocity_evaluations)
from .flow_process import SIGMA_MIN, TIMESTEP_SCALE, diffuse, model_time, velocity_target, x0_from_velocity

SAMPLERS.update({cls.__name__: cls for cls in HEUN_SAMPLERS.values()})

__all__ = ["SAMPLERS", "FlowEulerCfgSampler", "FlowEulerGuidanceIntervalSampler", "FlowEulerSampler",
           "FlowHeunSampler", "FlowHeunCfgSampler", "FlowHeunGuidanceIntervalSampler", "HEUN_SAMPLERS", "SOLVERS",
           "heun_counterpart", "velocity_evaluations",
           "SamplerOutput", "time_grid", "SIGMA_MIN", "TIMESTEP_SCALE", "diffuse", "velocity_target",
           "x0_from_velocity", "model_time"]
