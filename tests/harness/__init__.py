"""Test harnesses that play cluster components the emulator lacks (the kubelet)."""
