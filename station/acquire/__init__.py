"""Image acquisition: camera drivers and trigger sources."""
