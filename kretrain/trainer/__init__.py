"""What runs in the training pod (never imports kopf)."""
