from .flow_euler import (SAMPLERS, FlowEulerCfgSampler, FlowEulerGuidanceIntervalSampler, FlowEulerSampler,
                         SamplerOutput, time_grid)
