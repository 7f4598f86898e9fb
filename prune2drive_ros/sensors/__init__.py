"""What the cameras and the user hand in: image decoding, six-view synchronisation, rosbag2
reading, synthetic scenes and bags, questions files and retention-rates files.

Plain Python over numpy, OpenCV and ``rosbags``: the node and the offline commands read frames
through the same decoder and the same synchronizer.
"""
