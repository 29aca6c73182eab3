from .flow_euler import (SAMPLERS, FlowEulerCfgSampler, FlowEulerGuidanceIntervalSampler, FlowEulerSampler,
                         SamplerOutput, time_grid)

__all__ = ["SAMPLERS", "FlowEulerCfgSampler", "FlowEulerGuidanceIntervalSampler", "FlowEulerSampler",
           "SamplerOutput", "time_grid"]
