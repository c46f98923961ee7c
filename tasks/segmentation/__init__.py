from tasks.segmentation.task import Segmentation

__all__ = ["Segmentation"]
