"""prune2drive_ros: driving QA over six surround cameras with Prune2Drive token pruning.

Everything in this package but :mod:`prune2drive_ros.node` imports without ROS.
"""

__version__ = "0.1.0"
