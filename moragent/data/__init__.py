"""The data pipeline: public tool-use data -> role-explicit training trajectories.

``convert`` (source formats -> trajectories), ``complete`` (a teacher fills what a
source lacks), ``verify`` (rule checks and an optional judge). See docs/data-format.md.
"""
