"""moragent: Mixture-of-Roles agents on small language models.

Three roles (reasoner, executor, summarizer) share one frozen base model, each with its
own adapters; a ReAct controller sends every turn to the role that has it.
"""

from moragent.agent import Agent, RunResult
from moragent.roles import Role
from moragent.tools import Tool, load_tools, tool
from moragent.trajectory import Trajectory

__version__ = "0.1.0"

__all__ = ["Agent", "Role", "RunResult", "Tool", "Trajectory", "load_tools", "tool"]
