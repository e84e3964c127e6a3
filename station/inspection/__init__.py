"""Defect inspection: model backends turning a Frame into Detections."""
