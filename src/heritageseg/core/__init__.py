"""The vocabulary everything else speaks: classes, typed params, errors, file I/O, file names."""
