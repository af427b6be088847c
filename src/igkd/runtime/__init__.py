"""The machine a run is on: devices and fast settings, processes, deadlines, progress, optional extras, logs."""
