"""The machine a run is on: devices and fast settings, processes, deadlines, running time, progress, optional extras, logs."""
