from tasks.classification.task import CifarClassification

__all__ = ["CifarClassification"]
