"""Camera calibration: pixel scale (mm/px) and intrinsics from chessboard images.

Results are versioned JSON files (``id`` = content hash) referenced by
``calibration.file`` in the station config and stored with every verdict.
"""
