"""The node's serving logic as plain Python: the queueing worker and the diagnostics figures.

:mod:`prune2drive_ros.node` puts rclpy on top of these; they are tested without ROS.
"""
