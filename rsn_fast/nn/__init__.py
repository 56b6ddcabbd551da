"""Drop-in modules that other pose codebases can import without our trainer."""

from rsn_fast.nn.conv_module import ConvModule  # noqa: F401
from rsn_fast.nn.depthwise import DepthwiseConv2d  # noqa: F401
from rsn_fast.nn.inference import compile_for_cpu_inference  # noqa: F401
from rsn_fast.nn.prm import PoseRefineMachine  # noqa: F401
from rsn_fast.nn.rsb import FusedRSB, convert  # noqa: F401
