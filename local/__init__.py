"""The local emulator: serves template.yaml's routes over HTTP, fires schedules, runs the worker."""
