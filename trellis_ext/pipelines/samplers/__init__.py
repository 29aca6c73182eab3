from .flow_euler import (SAMPLERS, FlowEulerCfgSampler, FlowEulerGuidanceIntervalSampler, FlowEulerSampler,
                         SamplerOutput, time_grid)
from .flow_process import SIGMA_MIN, TIMESTEP_SCALE, diffuse, model_time, velocity_target, x0_from_velocity

__all__ = ["SAMPLERS", "FlowEulerCfgSampler", "FlowEulerGuidanceIntervalSampler", "FlowEulerSampler",
           "SamplerOutput", "time_grid", "SIGMA_MIN", "TIMESTEP_SCALE", "diffuse", "velocity_target",
           "x0_from_velocity", "model_time"]
