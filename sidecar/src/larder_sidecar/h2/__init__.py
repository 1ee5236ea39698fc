"""HTTP/2 for gRPC, as the sidecar speaks it: the frames (`frames.py`) and a lean client
for the user function's entity streams (`client.py`, `channel.py`)."""
