"""A Kubernetes API emulator for tests: kmock's scaffold plus the state a real API server keeps."""

from emulator.client import ApiStatusError, Client, job_path, path, rtj_path
from emulator.server import ApiError, Emulator, EmulatorServer

__all__ = ["ApiError", "ApiStatusError", "Client", "Emulator", "EmulatorServer", "job_path", "path", "rtj_path"]
