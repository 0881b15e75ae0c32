"""Small torch-free utilities shared by every layer (file I/O)."""
