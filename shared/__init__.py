"""Core package of the preview job service, shared by every function, the emulator and the worker."""
