"""What a fake VM is, shared by the fake Compute API and the fake Cloud Batch API (whose task
VMs are Compute Engine VMs too): a guest booted from an image with systemd as PID 1
(guest.py) and its metadata server (metadata.py)."""
