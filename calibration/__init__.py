"""Camera calibration: intrinsics, distortion and mm per pixel from chessboard or ChArUco views.

- :mod:`calibration.targets`: the boards and their corners in a view;
- :mod:`calibration.camera`: the calibration, refused with the reason (too few or blurred views,
  poor coverage of the frame, reprojection error above the limit);
- :mod:`calibration.records`: stored as versions per station and camera in the station database
  (in force, audited, rolled back); every verdict carries the id of the one in force;
- :mod:`calibration.undistort`: the precomputed undistortion remap;
- :mod:`calibration.chessboard`: the older single-file result (``calibration.file`` in the config).

``python -m calibration --help`` for the command line; docs/camera_setup.md.
"""
