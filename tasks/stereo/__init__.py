from tasks.stereo.task import StereoTask

__all__ = ["StereoTask"]
