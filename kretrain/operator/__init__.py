"""The Kopf operator for RetrainJobs (never imports torch or ultralytics)."""
